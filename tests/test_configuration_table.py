"""README's configuration table lists every environment variable the settings read.

What settings.py reads is collected by tests/settings_variables.py (loading the settings
with a recording environment, in development and in production, and parsing its
`env.<cast>("NAME")` calls); the table is README.md's "Configuration" section: its main
table's first column, and the per-partner table's suffixes under each prefix it names.
"""

import re

import pytest

from tests.settings_variables import ROOT, settings_variables

NAME = re.compile(r"`([A-Z][A-Z0-9_]*)`")
PREFIX = re.compile(r"`([A-Z][A-Z0-9_]*_)`")


def configuration_section(readme: str) -> str:
    """README's "## Configuration" section, up to the next second-level heading."""
    start = readme.index("\n## Configuration\n")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end != -1 else None]


def documented_variables(section: str) -> set[str]:
    """Every name in a table's first column; a table headed `suffix` counts each suffix
    under every prefix (`INVENTORY_API_`) named in the paragraph before it."""
    documented: set[str] = set()
    prefixes = [""]
    paragraph: list[str] = []
    in_table = False
    for line in section.splitlines():
        if not line.startswith("|"):
            paragraph = [] if in_table else paragraph
            in_table = False
            paragraph.append(line)
            continue
        first_cell = line.split("|")[1].strip()
        if not in_table:  # the header row
            in_table = True
            text = " ".join(paragraph)
            prefixes = PREFIX.findall(text) if first_cell == "suffix" else [""]
            continue
        for name in NAME.findall(first_cell):
            documented.update(prefix + name for prefix in prefixes)
    return documented


@pytest.fixture(scope="module")
def readme_table():
    return documented_variables(configuration_section((ROOT / "README.md").read_text()))


def test_every_variable_the_settings_read_is_in_the_readme_table(readme_table):
    """Add a row (or a suffix) to README's "Configuration" for each name listed here."""
    missing = sorted(settings_variables() - readme_table)

    assert missing == []


def test_the_table_reader_finds_both_tables():
    """The reader sees a plain row and a per-partner suffix, so a missing row is noticed."""
    section = (
        "\n## Configuration\n\n| variable | meaning |\n| --- | --- |\n"
        "| `DJANGO_DEBUG`, `REDIS_URL` | … |\n\n"
        "Per partner, with prefix `INVENTORY_API_` or `PAYMENT_API_`:\n\n"
        "| suffix | meaning |\n| --- | --- |\n| `READ_TIMEOUT` | seconds |\n"
    )

    assert documented_variables(section) == {
        "DJANGO_DEBUG",
        "REDIS_URL",
        "INVENTORY_API_READ_TIMEOUT",
        "PAYMENT_API_READ_TIMEOUT",
    }

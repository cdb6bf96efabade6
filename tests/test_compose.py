"""docker-compose.yml, .env.example and the image, as a team runs them.

Docker cannot run here, so the stack is checked without it: the file against the compose
specification (offline, with the schema check-jsonschema ships), its services as loaded
YAML, .env.example against every variable the file and the settings read, and the image's
static files by running the Dockerfile's own collectstatic step, then gunicorn with
production settings: the admin is styled with DJANGO_DEBUG off.
"""

import os
import re
import shlex
import subprocess
import sys

import pytest
import requests
import yaml
from django.conf import settings

from tests.processes import ROOT, Gunicorn
from tests.settings_variables import settings_variables

COMPOSE_FILE = ROOT / "docker-compose.yml"
CHECK_JSONSCHEMA = [
    sys.executable,
    "-m",
    "check_jsonschema",
    "--builtin-schema",
    "vendor.compose-spec",
]
# Any attempt to fetch something fails at once: an unreachable proxy for every scheme.
OFFLINE = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
QUEUES = {"api.inventory": "inventory", "api.payment": "payment", "default": "default"}


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def app_services(compose):
    """The services that run our image (every one but Redis, PostgreSQL, the simulators)."""
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("image", "").startswith("dualsend:")
    }


def validate(path):
    return subprocess.run(
        [*CHECK_JSONSCHEMA, str(path)],
        env=os.environ | OFFLINE,
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- the file against the compose specification ----------------------------------------------


def test_the_compose_file_follows_the_compose_specification_offline():
    """What scripts/test (and so CI) runs, with no network to reach."""
    result = validate(COMPOSE_FILE)

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_offline_check_refuses_a_service_the_specification_does_not_allow(tmp_path):
    """A misspelt key fails the check: the validation is not a formality."""
    stack = yaml.safe_load(COMPOSE_FILE.read_text())
    stack["services"]["web"]["healthchek"] = stack["services"]["web"].pop("healthcheck")
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(stack))

    result = validate(broken)

    assert result.returncode != 0
    assert "healthchek" in result.stdout + result.stderr


def test_every_dollar_is_an_interpolation_or_escaped():
    """Compose interpolates `$NAME` from the host: a `$` meant for the container's shell is
    written `$$` (the workers' healthchecks), every other one is a `${…}`."""
    text = COMPOSE_FILE.read_text().replace("$$", "")

    assert re.findall(r"\$(?!\{)", text) == []


# --- the services -----------------------------------------------------------------------------


def test_one_image_built_once_and_named(compose, app_services):
    """Every process of ours runs dualsend:<tag>; only migrate, which all others wait for,
    builds it, from the product target."""
    assert set(app_services) == {
        "migrate",
        "web",
        "worker-inventory",
        "worker-payment",
        "worker-default",
        "beat",
        "flower",
    }
    assert len({service["image"] for service in app_services.values()}) == 1
    builders = {name for name, service in compose["services"].items() if "build" in service}
    assert builders & set(app_services) == {"migrate"}
    assert app_services["migrate"]["build"]["target"] == "product"


def test_migrations_run_first_and_everything_of_ours_waits_for_them(app_services):
    migrate = app_services["migrate"]
    assert migrate["command"][:3] == ["python", "manage.py", "migrate"]
    assert migrate["restart"] == "no"
    assert "migrate" not in migrate["depends_on"]
    for name, service in app_services.items():
        if name != "migrate":
            assert service["depends_on"]["migrate"] == {
                "condition": "service_completed_successfully"
            }, name


def test_one_worker_per_queue_each_pinged_under_its_own_node_name(app_services):
    """Each of the settings' queues has one worker (`-Q`), named `<role>@%h`, whose
    healthcheck pings that node and no other."""
    assert set(QUEUES) == {queue.name for queue in settings.CELERY_TASK_QUEUES}
    workers = {
        name: service["command"]
        for name, service in app_services.items()
        if service.get("command", [])[:4] == ["celery", "-A", "project", "worker"]
    }
    served = {command[command.index("-Q") + 1]: name for name, command in workers.items()}
    assert set(served) == set(QUEUES)
    assert len(workers) == len(QUEUES)
    # Containers share no metrics directory: each worker serves its own series on a port.
    ports = {app_services[name]["environment"]["DUALSEND_METRICS_PORT"] for name in workers}
    assert len(ports) == len(workers)
    for queue, role in QUEUES.items():
        service = app_services[served[queue]]
        command = service["command"]
        assert command[command.index("-n") + 1] == f"{role}@%h"
        assert service["healthcheck"]["test"] == [
            "CMD-SHELL",
            f"celery -A project inspect ping -d {role}@$$HOSTNAME -t 10",
        ]


def test_every_long_running_service_has_a_healthcheck_and_restarts(compose):
    for name, service in compose["services"].items():
        if name == "migrate":
            continue
        assert service["restart"] == "unless-stopped", name
        test = service["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name


def test_web_is_probed_on_healthz_and_beat_on_its_schedule_file(app_services):
    web_probe = " ".join(app_services["web"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8000/healthz" in web_probe
    beat = app_services["beat"]
    schedule = beat["command"][beat["command"].index("--schedule") + 1]
    assert f"glob.glob('{schedule}*')" in " ".join(beat["healthcheck"]["test"])


def test_flower_listens_for_the_proxy_behind_a_required_login(app_services):
    flower = app_services["flower"]

    assert flower["command"] == [
        "celery",
        "-A",
        "project",
        "flower",
        "--port=5555",
        "--address=0.0.0.0",
    ]
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert flower["ports"] == ["127.0.0.1:5555:5555"]
    # Flower keeps every variable the other processes have.
    assert set(app_services["web"]["environment"]) < set(flower["environment"])


def test_postgres_and_redis_keep_their_data_in_named_volumes(compose):
    services = compose["services"]

    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert "redis-data:/data" in services["redis"]["volumes"]
    assert {"postgres-data", "redis-data"} <= set(compose["volumes"])
    assert services["redis"]["command"][-2:] == ["--appendonly", "yes"]


# --- .env.example --------------------------------------------------------------------------------


def env_example():
    """{name: value} of every line of .env.example, `# NAME=value` (commented) included."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    pairs = [re.fullmatch(r"#? ?([A-Z][A-Z0-9_]*)=(.*)", line) for line in lines]
    return {match[1]: (match[2], not match[0].startswith("#")) for match in pairs if match}


def test_env_example_lists_every_variable_of_the_compose_file_and_the_settings():
    interpolated = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", COMPOSE_FILE.read_text()))

    missing = (interpolated | settings_variables()) - set(env_example())

    assert sorted(missing) == []


def test_env_example_leaves_every_required_value_empty():
    """What compose requires (`${NAME:?…}`) is set, empty, in the file: it refuses to start
    until someone fills it in, and no placeholder can pass for a secret."""
    required = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):\?", COMPOSE_FILE.read_text()))
    example = env_example()

    assert {name for name, (_, active) in example.items() if active} == required
    assert {name: example[name][0] for name in required} == dict.fromkeys(required, "")


# --- the image's static files ----------------------------------------------------------------


def dockerfile_collectstatic():
    """The Dockerfile's collectstatic step: its environment and its command."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    (line,) = [
        line for line in text.splitlines() if "collectstatic" in line and line.startswith("RUN ")
    ]
    words = shlex.split(line.removeprefix("RUN "))
    assignments = [word for word in words if re.fullmatch(r"[A-Z_]+=.*", word)]
    command = words[len(assignments) :]
    return dict(word.split("=", 1) for word in assignments), command


@pytest.fixture(scope="module")
def static_root(tmp_path_factory):
    """STATIC_ROOT as the image's build leaves it: the Dockerfile's step, run here."""
    directory = tmp_path_factory.mktemp("image")
    static = directory / "static"
    (directory / "image_settings.py").write_text(
        f"from project.settings import *  # noqa: F403\nSTATIC_ROOT = {str(static)!r}\n"
    )
    environment, command = dockerfile_collectstatic()
    assert command[:2] == ["python", "manage.py"]
    result = subprocess.run(
        [sys.executable, *command[1:]],
        cwd=ROOT,
        env={
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(directory),
            "DJANGO_SETTINGS_MODULE": "image_settings",
            "PROMETHEUS_MULTIPROC_DIR": str(directory / "prometheus"),
            **environment,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return directory


@pytest.fixture(scope="module")
def production_web(static_root):
    """gunicorn, as the image runs it, with production settings behind a TLS proxy."""
    environment = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(static_root),
        "DJANGO_SETTINGS_MODULE": "image_settings",
        "PROMETHEUS_MULTIPROC_DIR": str(static_root / "prometheus"),
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "compose-test-" + "x" * 40,
        "DJANGO_SECURE_PROXY_SSL_HEADER": "1",
        # Nothing listens there: serving the admin's CSS needs no database.
        "DATABASE_URL": "postgres://dualsend@127.0.0.1:9/unused",
        "DUALSEND_API_TOKENS": "compose-test",
        "INVENTORY_API_URL": "https://inventory.invalid",
        "INVENTORY_API_TOKEN": "compose-test",
        "PAYMENT_API_URL": "https://payment.invalid",
        "PAYMENT_API_KEY": "compose-test",
    }
    web = Gunicorn("compose-static-gunicorn", environment)
    try:
        yield web.port
    finally:
        web.stop()


def fetch(port, path, **headers):
    """GET through the TLS proxy (X-Forwarded-Proto: https)."""
    return requests.get(
        f"http://127.0.0.1:{port}{path}",
        headers={"X-Forwarded-Proto": "https", **headers},
        allow_redirects=False,
        timeout=5,
    )


def test_the_admin_css_is_served_with_debug_off(production_web):
    response = fetch(production_web, "/static/admin/css/base.css")

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/css")
    assert "body" in response.text


def test_the_admin_pages_name_hashed_css_cached_for_good_and_gzipped(production_web):
    """The login page links the collected, hashed file; WhiteNoise serves it immutable,
    and compressed to a browser that accepts it."""
    page = fetch(production_web, "/admin/login/")
    assert page.status_code == 200
    (href,) = re.findall(r'href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', page.text)

    response = fetch(production_web, href, **{"Accept-Encoding": "gzip"})

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/css")
    assert "immutable" in response.headers["Cache-Control"]
    assert response.headers["Content-Encoding"] == "gzip"


def test_development_serves_the_admin_css_without_collectstatic(client):
    """DJANGO_DEBUG on (the tests, the demo): straight from the apps, nothing collected."""
    response = client.get("/static/admin/css/base.css")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/css")
    assert b"body" in b"".join(response.streaming_content)

"""The demo writes only to a database of its own, and logs in with a user of its own.

`refresh_demo_user` is the demo's user step, run here against the test database: it makes
or refreshes `demo`, never touches another user (an `admin` of yours), and refuses to
write at all when the database at hand is not the one the demo was given.
"""

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection

from devstack import DEMO_USERNAME, NotTheDemoDatabase, demo_database_url, refresh_demo_user

pytestmark = pytest.mark.django_db

ADMINS_PASSWORD = "the-admins-own-password"


def url_of_this_database():
    """A DATABASE_URL naming the database this test runs on."""
    config = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{config['NAME']}"
    port = f":{config['PORT']}" if config["PORT"] else ""
    return f"postgres://{config['USER']}@{config['HOST']}{port}/{config['NAME']}"


@pytest.fixture
def admin():
    """Somebody's own `admin`: staff, not a superuser, with a password of their own."""
    return get_user_model().objects.create_user(
        "admin", password=ADMINS_PASSWORD, is_staff=True, is_superuser=False
    )


def assert_untouched(admin):
    before = (admin.password, admin.is_staff, admin.is_superuser, admin.is_active)
    admin.refresh_from_db()
    assert (admin.password, admin.is_staff, admin.is_superuser, admin.is_active) == before
    assert admin.check_password(ADMINS_PASSWORD)


def test_the_demo_login_is_a_user_of_its_own_and_admin_is_left_alone(admin):
    password = refresh_demo_user(url_of_this_database())

    demo = get_user_model().objects.get(username=DEMO_USERNAME)
    assert demo.is_staff and demo.is_superuser and demo.is_active
    assert demo.check_password(password)
    assert_untouched(admin)


def test_each_run_gives_the_demo_user_a_new_password():
    first = refresh_demo_user(url_of_this_database())
    second = refresh_demo_user(url_of_this_database())

    demo = get_user_model().objects.get(username=DEMO_USERNAME)
    assert first != second
    assert demo.check_password(second)
    assert not demo.check_password(first)


def test_the_demo_refuses_to_write_to_a_database_that_is_not_its_own(admin):
    """Given the demo's database but connected to another: no user made, none changed."""
    demo_url = demo_database_url("postgres://dualsend@db.internal:5432/dualsend")

    with pytest.raises(NotTheDemoDatabase, match="only in its own database"):
        refresh_demo_user(demo_url)

    assert not get_user_model().objects.filter(username=DEMO_USERNAME).exists()
    assert_untouched(admin)


@pytest.mark.parametrize(
    ("project_url", "demo_url"),
    [
        (
            "postgres://dualsend:pw@db.internal:5432/dualsend",
            "postgres://dualsend:pw@db.internal:5432/dualsend_demo",
        ),
        ("postgresql://127.0.0.1/shop", "postgresql://127.0.0.1/shop_demo"),
        ("", f"sqlite:///{settings.BASE_DIR / 'var' / 'demo.sqlite3'}"),
        (
            "sqlite:////srv/dualsend.sqlite3",
            f"sqlite:///{settings.BASE_DIR / 'var' / 'demo.sqlite3'}",
        ),
    ],
)
def test_the_demo_database_sits_beside_the_projects_never_on_it(project_url, demo_url):
    """`<name>_demo` beside PostgreSQL, else the demo's own SQLite file under var/."""
    assert demo_database_url(project_url) == demo_url
    assert demo_database_url(project_url) != project_url

import pytest

from tests.factories import StaffFactory, UserFactory


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def staff_user(db):
    return StaffFactory()


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture(scope="session", autouse=True)
def _end_stray_test_database_sessions(django_db_setup, django_db_blocker):
    """Connections opened on threads the tests do not own (asgiref's executor thread behind
    Channels' database_sync_to_async, in-process Celery worker threads) outlive their tests;
    end them so the test database can be dropped at the end of the session."""
    yield
    from django.db import connection

    with django_db_blocker.unblock():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        connection.close()

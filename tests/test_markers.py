"""The markers tests/conftest.py sets from what a test uses: `database` decides what the
PostgreSQL pass (`make test-postgres`, -m database) runs, so a test that can reach the database
and lacks it would never meet PostgreSQL."""

import pytest

from tests.conftest import _database_dependent


class Item:
    def __init__(self, markers=(), fixtures=()):
        self.markers, self.fixturenames = set(markers), list(fixtures)

    def get_closest_marker(self, name):
        return getattr(pytest.mark, name) if name in self.markers else None  # (a MarkDecorator: truthy)


@pytest.mark.parametrize("item, dependent", [
    (Item(markers={"django_db"}), True),
    (Item(fixtures={"client", "_django_db_helper", "django_db_setup"}), True),  # db, transactional_db, live_server
    (Item(markers={"live"}), True),  # its servers read DATABASE_URL
    (Item(markers={"live", "own_database"}), False),  # a bench's own SQLite stack
    (Item(markers={"slow"}, fixtures={"smollm2", "settings"}), False),
    (Item(), False),
])
def test_a_test_is_database_dependent_when_it_can_reach_the_suites_database(item, dependent):
    assert _database_dependent(item) is dependent


def test_the_collected_tests_carry_the_marker(request):
    items = request.session.items
    assert items
    for item in items:
        assert bool(item.get_closest_marker("database")) == _database_dependent(item), item.nodeid

from tests.api.conftest import api, owner, resize, staff  # noqa: F401  (shared fixtures)
from tests.logs.conftest import es, search_prefix  # noqa: F401

"""Cross-cutting pieces of the REST API shared by every app: the error shape, pagination,
ownership scoping, permissions and view mixins (see README, "REST API")."""

"""Execution logs in the search server: mapping and index template (`documents`), bulk shipping
from the durable buffer (`shipping`), and the queries the API runs (`queries`)."""

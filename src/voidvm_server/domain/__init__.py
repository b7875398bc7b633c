"""Domain: models, VM states, services and quotas. Imports no driver, ORM or HTTP code."""

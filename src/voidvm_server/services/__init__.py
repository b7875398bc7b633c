"""Application services: the use cases. They combine domain rules, repositories and drivers."""

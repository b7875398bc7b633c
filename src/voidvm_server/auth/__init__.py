"""Authentication and authorization: passwords, tokens, principals and permissions."""

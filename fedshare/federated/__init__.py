"""The federated roles: messages, clients (devices), the server, aggregation, one round, the simulation."""

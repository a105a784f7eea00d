"""ExpressGateway."""

"""Configuration: schema, then four pure steps — load, validate, plan, diff."""

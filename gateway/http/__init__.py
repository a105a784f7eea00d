"""Neutral HTTP model and header rules shared by every HTTP front and back adapter.

Pure: no trio, no sockets. Adapters in ``workers/`` perform what these modules decide.
"""

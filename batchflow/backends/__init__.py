"""Backends: the services that run batch jobs. Only the Gemini Developer API for now."""

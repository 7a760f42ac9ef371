"""Built-in tuners: hook implementations that make candidate models (``gatekeeper tune``)."""

"""Sensor builders: landing, drift, fairness, promotion and alerts. They receive jobs, keys and
policy as arguments and never import the definitions."""

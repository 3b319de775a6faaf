"""HTTP: the Flask app factory and its blueprints. Nothing in the package imports it."""

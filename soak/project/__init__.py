"""The project the soak serves: an echo consumer in a group, and its own introspection."""

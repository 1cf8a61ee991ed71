"""Suite YAML: loading with line numbers, the schema, grid expansion and CLI overrides."""

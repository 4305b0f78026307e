"""What the user writes and what it is checked against: the pydantic models of a pipeline (the one
source of the JSON Schema and the reference), YAML with line marks, the project file, the checks
`validate` makes, and the service's facts (models, prices, token counts, refusals)."""

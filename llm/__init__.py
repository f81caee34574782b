"""The LLM planner (Claude through the anthropic SDK): prompts, tool schemas, validation and
fallback to the rule planner. Arrives with its own issue; the package exists so the layout
and the import rules hold from the start."""

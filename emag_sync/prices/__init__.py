"""Price updates back to eMAG: the rules (rules), bulk CSV input (csv_input), sending and audit (apply)."""

"""Small helpers shared by the tools: user-facing errors and file-safety checks."""

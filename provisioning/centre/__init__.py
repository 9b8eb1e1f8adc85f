"""The centre's tools (issue 11): sign and send commands and updates, follow replies, list sites."""

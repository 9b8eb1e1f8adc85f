"""The centre's tools: the site CA, one-time tokens and the enrolment service; signing and sending
commands and updates, following replies, listing sites."""

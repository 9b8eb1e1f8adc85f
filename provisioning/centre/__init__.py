"""The centre's side of enrolment: the site CA, one-time tokens, the enrolment service."""

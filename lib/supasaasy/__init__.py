"""SupaSaaSy: keep a Postgres (Supabase) copy of your SaaS data through job-based sync."""

from .redact import install_log_redaction

__version__ = "0.1.0"

install_log_redaction()  # every record of the `supasaasy` loggers, wherever it is written

"""SupaSaaSy: keep a Postgres (Supabase) copy of your SaaS data through job-based sync."""

__version__ = "0.1.0"

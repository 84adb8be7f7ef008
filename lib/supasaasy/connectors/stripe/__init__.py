"""The Stripe connector."""

from .connector import API_VERSION, StripeConnector, StripeSettings

__all__ = ["API_VERSION", "StripeConnector", "StripeSettings"]

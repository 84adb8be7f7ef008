"""The embedded local stack: Postgres, PostgREST and a gateway with Supabase's URL layout."""

from .processes import StackError
from .stack import LocalStack, StackInfo, StackSettings, describe

__all__ = ["LocalStack", "StackError", "StackInfo", "StackSettings", "describe"]

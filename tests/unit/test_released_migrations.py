"""Released migrations are never edited: a database that applied one has recorded its
version and will never run it again, so a change to it would reach new databases only.
A change to the schema is a new migration. When a release ships new migrations, add
them here."""

from __future__ import annotations

import hashlib

from supasaasy.migrations import package_migrations

# The first 32 hex digits of each released file's SHA-256, and its name.
RELEASED = dict(
    line.split()[::-1]
    for line in """
30cc7275bf92c64bea9cadaea7b7777a  20261202000200_supasaasy_adopt_original.sql
9866d9dc02798a0ad5ad374e3a61eb79  20261202000300_supasaasy_core.sql
9039662fb42135f27f0965736b74a798  20261202000400_stripe_views.sql
3208ccb30b11ff98b85894b9eb0e9c18  20261202000500_intercom_views.sql
2f5d46c2aaec8241f7c3863e41475779  20261202000600_notion_views.sql
3fdd815a76ca3213c1a5136bd4020ab0  20261202000700_supasaasy_readers.sql
a30ca45060787fd6bc7b00ba6196bf81  20261202000800_supasaasy_import_original.sql
31d32a7c7a8f3e67bc7f8377f28c04a3  20261202000900_supasaasy_webhooks.sql
916c421aee1c5a0e3c17ca274d8c3d56  20261202001000_supasaasy_source_times.sql
f945914396caed2021b204066799dd78  20261202001100_stripe_billing_views.sql
7d6b8d5ae749f30a3805fe8542ba2fd9  20261202001200_supasaasy_collection_first_key.sql
fb188a25385174228d1ef0fc37dad382  20261202001300_intercom_view_columns.sql
f4768058943d04b9c90535efe1ec99ab  20261202001400_notion_entity_ids.sql
3b77a46c50309b80436d8bd82415c8af  20261202001500_supasaasy_sweep_plan.sql
15cdadcba4b28b278b733136929c3ae2  20261202001600_supasaasy_shards.sql
""".strip().splitlines()
)


def test_released_migrations_are_unchanged() -> None:
    shipped = {
        m.file_name: hashlib.sha256(m.sql.encode()).hexdigest()[:32] for m in package_migrations()
    }
    for name, digest in RELEASED.items():
        assert name in shipped, f"{name} was released: it must keep shipping"
        assert shipped[name] == digest, (
            f"{name} was released: add a migration instead of editing it"
        )


def test_new_migrations_come_after_the_released_ones() -> None:
    latest = max(RELEASED)
    for migration in package_migrations():
        if migration.file_name not in RELEASED:
            assert migration.file_name > latest, (
                f"{migration.file_name} sorts before a released one"
            )

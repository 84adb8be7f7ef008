"""ConnectorConformance: the checks every connector should pass, a pytest class run
against fake providers (see `supasaasy.testing`). Subclass it in a test module:

    class TestAcmeConformance(ConnectorConformance):
        providers = (FakeAcme,)

Each check is parametrized by connector (`[acme]`), by connector and resource
(`[acme-widget]`) or also by contradiction (`[acme-widget-missing_id]`), and its name
contains `conformance` (`pytest -k conformance`). The checks:

- metadata complete: name, display name, API version, resources with unique types and
  collection keys, children whose parents are task resources, sql_files shipped;
  the fake provider covers every resource;
- a full sync of each task resource pages to the end and yields exactly the provider's
  objects; resuming from any of its cursors misses nothing;
- an incremental sync returns exactly what the change feed reports since the
  watermark, deletions included where it reports them, and resumes from its cursors;
- children come in their parent's pages (full and incremental);
- archived objects, and only those, are marked archived;
- bad and unknown settings and a missing API key variable are named, never the secret;
- 429 (no sooner than its Retry-After), 500 and 503 are retried with nothing missing,
  exhausted retries raise ProviderError, the key in no message or log;
- self-contradicting pages fail with ProviderError, never a quiet end or a loop;
- records carry the provider's created and updated times.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any, ClassVar, TypeVar

import pytest

from ..config import AppConfig
from ..connectors import (
    ConfigError,
    Connector,
    ConnectorMetadata,
    Page,
    ProviderError,
    Record,
    connector_class,
    connector_sql,
    create_connector,
)
from ..errors import OutOfTimeError
from .fake import Contradiction, FakeProvider

# Seconds a 429 asks the connector to wait (kept small: the suite waits it out).
RETRY_AFTER = 0.2

# Which resources a check runs over: (fake provider, metadata, resource type) -> whether.
Selection = Callable[[type[FakeProvider], ConnectorMetadata, str], bool]
_SELECTIONS: dict[str, Selection] = {}
Check = TypeVar("Check", bound=Callable[..., Any])


def _over(selection: Selection) -> Callable[[Check], Check]:
    """Run the decorated check once per resource `selection` picks."""

    def register(check: Check) -> Check:
        _SELECTIONS[check.__name__] = selection
        return check

    return register


def _task(fake: type[FakeProvider], metadata: ConnectorMetadata, resource: str) -> bool:
    return metadata.resource(resource).synced_with_parent is None


def _first_task(fake: type[FakeProvider], metadata: ConnectorMetadata, resource: str) -> bool:
    return resource == next((r.resource_type for r in metadata.task_resources), None)


def _paged_task(fake: type[FakeProvider], metadata: ConnectorMetadata, resource: str) -> bool:
    return _task(fake, metadata, resource) and fake.resources[resource].paged


def _incremental(fake: type[FakeProvider], metadata: ConnectorMetadata, resource: str) -> bool:
    return _task(fake, metadata, resource) and metadata.resource(resource).supports_incremental


def _parent(fake: type[FakeProvider], metadata: ConnectorMetadata, resource: str) -> bool:
    return _task(fake, metadata, resource) and bool(metadata.children_of(resource))


def _archivable(fake: type[FakeProvider], metadata: ConnectorMetadata, resource: str) -> bool:
    return _task(fake, metadata, resource) and fake.resources[resource].archivable


def _timed(fake: type[FakeProvider], metadata: ConnectorMetadata, resource: str) -> bool:
    spec = fake.resources[resource]
    return spec.has_created_time or spec.has_updated_time


def _ranged(fake: type[FakeProvider], metadata: ConnectorMetadata, resource: str) -> bool:
    listing = metadata.resource(resource).listing
    return _task(fake, metadata, resource) and listing is not None and bool(listing.created_range)


def _metadata_of(fake: type[FakeProvider]) -> ConnectorMetadata:
    """The metadata of the connector a fake provider stands in for."""
    return connector_class(AppConfig(app_key=fake.app_key, connector=fake.connector)).metadata


def _records(pages: list[Page], collection_key: str) -> list[Record]:
    return [r for page in pages for r in page.records if r.collection_key == collection_key]


def _changes(pages: list[Page], collection_key: str) -> set[str]:
    """The external ids of a collection's records and deletions."""
    deleted = [d for page in pages for d in page.deletions if d.collection_key == collection_key]
    return set(_ids(pages, collection_key)) | {d.external_id for d in deleted}


def _ids(pages: list[Page], collection_key: str) -> list[str]:
    """The external ids of a collection's records, sorted (repeats kept)."""
    return sorted(r.external_id for r in _records(pages, collection_key))


class ConnectorConformance:
    """The conformance checks. `providers`: the fake provider classes to run them over;
    `expected_failures`: `"<check>[<id>]"` -> why (a strict xfail) or a pytest mark;
    `guard_seconds`: how long a sync may page before it counts as a loop.

    Fixtures: `provider_class` (a parameter), `provider` (a fresh fake, serving, its
    environment set), `connector` (configured against it); parameters `resource` and
    `contradiction`. `drain(connector, pages)` runs a sync under the loop guard."""

    providers: ClassVar[Sequence[type[FakeProvider]]] = ()
    expected_failures: ClassVar[Mapping[str, str | pytest.MarkDecorator]] = {}
    guard_seconds: ClassVar[float] = 2.0

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "provider_class" not in metafunc.fixturenames:
            return
        check = metafunc.function.__name__
        selection = _SELECTIONS.get(check)
        names = ["provider_class"] + [
            n for n in ("resource", "contradiction") if n in metafunc.fixturenames
        ]
        cases = []
        for fake in self.providers:
            for values in self._cases(fake, selection, "contradiction" in names):
                case = "-".join([fake.connector, *values])
                cases.append(pytest.param(fake, *values, id=case, marks=self._marks(check, case)))
        metafunc.parametrize(names, cases)

    @staticmethod
    def _cases(
        fake: type[FakeProvider], selection: Selection | None, contradictions: bool
    ) -> Iterator[tuple[str, ...]]:
        if selection is None:
            yield ()
            return
        metadata = _metadata_of(fake)
        for resource in metadata.resources:
            name = resource.resource_type
            if name not in fake.resources or not selection(fake, metadata, name):
                continue
            if contradictions:
                yield from ((name, kind) for kind in sorted(fake.resources[name].contradicted_by))
            else:
                yield (name,)

    def _marks(self, check: str, case: str) -> tuple[pytest.MarkDecorator, ...]:
        found = self.expected_failures.get(f"{check}[{case}]")
        if isinstance(found, str):
            return (pytest.mark.xfail(reason=found, strict=True),)
        return () if found is None else (found,)

    # -- fixtures --------------------------------------------------------------------

    @pytest.fixture
    def provider(
        self, provider_class: type[FakeProvider], monkeypatch: pytest.MonkeyPatch
    ) -> Iterator[FakeProvider]:
        """A fresh fake provider, serving, its environment variables set."""
        with provider_class() as fake:
            for name, value in fake.environ().items():
                monkeypatch.setenv(name, value)
            yield fake
        assert not fake.errors, f"the fake provider failed: {fake.errors}"

    @pytest.fixture
    def connector(self, provider: FakeProvider) -> Iterator[Connector]:
        """The connector, configured against `provider`."""
        made = create_connector(provider.app_config())
        yield made
        made.close()

    def drain(self, connector: Connector, pages: Iterator[Page]) -> list[Page]:
        """Every page of a sync; the test fails when it pages longer than
        `guard_seconds` (a loop)."""
        found: list[Page] = []
        deadline = connector.deadline = time.monotonic() + self.guard_seconds
        try:
            for page in pages:
                found.append(page)
                if time.monotonic() > deadline:
                    raise OutOfTimeError("still paging")
        except OutOfTimeError:
            pytest.fail(f"still paging after {self.guard_seconds} s ({len(found)} pages): a loop")
        finally:
            connector.deadline = None
        return found

    # -- the checks ------------------------------------------------------------------

    def test_conformance_metadata_is_complete(self, provider_class: type[FakeProvider]) -> None:
        metadata = _metadata_of(provider_class)
        assert metadata.name == provider_class.connector
        assert metadata.display_name.strip() and metadata.api_version.strip()
        assert metadata.resources, "a connector syncs at least one resource"
        for attribute in ("resource_type", "collection_key"):
            values = [getattr(r, attribute) for r in metadata.resources]
            assert len(set(values)) == len(values), f"{attribute}s repeat: {values}"
        tasks = {r.resource_type for r in metadata.task_resources}
        assert tasks, "no resource has a task of its own"
        for resource in metadata.resources:
            parent = resource.synced_with_parent
            assert parent is None or parent in tasks, f"{resource.resource_type}: no task {parent}"
        try:
            shipped = connector_sql(metadata.name)
        except FileNotFoundError as missing:
            pytest.fail(f"an sql_files entry is not in the connector's sql/ folder: {missing}")
        assert [name for name, _ in shipped] == list(metadata.sql_files)
        assert all(text.strip() for _, text in shipped), "an SQL file is empty"

    def test_conformance_fake_provider_covers_every_resource(
        self, provider_class: type[FakeProvider]
    ) -> None:
        resources = {r.resource_type for r in _metadata_of(provider_class).resources}
        missing = resources - set(provider_class.resources)
        assert not missing, f"{provider_class.__name__} lacks {sorted(missing)}"

    @_over(_task)
    def test_conformance_full_sync_pages_to_the_end(
        self, provider: FakeProvider, connector: Connector, resource: str
    ) -> None:
        expected = provider.populate(resource)
        pages = self.drain(connector, connector.full_sync(resource))
        assert pages and pages[-1].cursor is None, "the last page has a cursor"
        assert None not in [p.cursor for p in pages[:-1]], "a page before the last has no cursor"
        if provider.resources[resource].paged:
            assert len(pages) >= 3, f"{len(expected)} objects, {provider.page_size} a page"
        assert _ids(pages, connector.metadata.resource(resource).collection_key) == sorted(expected)

    @_over(_paged_task)
    def test_conformance_resuming_from_any_cursor_misses_nothing(
        self, provider: FakeProvider, connector: Connector, resource: str
    ) -> None:
        collection = connector.metadata.resource(resource).collection_key
        everything = set(provider.populate(resource))
        whole = self.drain(connector, connector.full_sync(resource))
        cursors = [(n, p.cursor) for n, p in enumerate(whole) if p.cursor is not None]
        assert cursors, "no page to resume after"
        for n, cursor in cursors:
            rest = self.drain(connector, connector.full_sync(resource, cursor=cursor))
            assert rest[-1].cursor is None
            seen = set(_ids(whole[: n + 1], collection)) | set(_ids(rest, collection))
            assert seen == everything, (f"resuming from {cursor!r}: missing "
                                        f"{sorted(everything - seen)}, unknown "
                                        f"{sorted(seen - everything)}")  # fmt: skip

    @_over(_incremental)
    def test_conformance_incremental_sync_returns_the_changes_since_the_watermark(
        self, provider: FakeProvider, connector: Connector, resource: str
    ) -> None:
        """Changes enough for two pages; resuming from any cursor misses none of them."""
        collection = connector.metadata.resource(resource).collection_key
        *changed, deleted = provider.populate(resource)[: provider.page_size + 2]  # 30 days old
        since = provider.now() - timedelta(hours=1)
        for object_id in changed:
            provider.update(resource, object_id)
        provider.delete(resource, deleted)
        [added] = provider.create(resource, at=provider.now())
        pages = self.drain(connector, connector.incremental_sync(resource, since=since))
        assert pages and pages[-1].cursor is None
        feed = provider.resources[resource].feed
        expected = set(changed) if "updated" in feed else set()
        expected |= {added} if "created" in feed else set()
        live = {r.external_id for r in _records(pages, collection) if not r.archived}
        assert live == expected, f"not exactly what the change feed reports ({sorted(feed)})"
        everything = _changes(pages, collection)
        if "deleted" in feed:
            assert deleted in everything - live, "the feed reports the deletion: it is lost"
        for n, page in enumerate(pages[:-1]):
            rest = self.drain(connector, connector.incremental_sync(
                resource, since=since, cursor=page.cursor))  # fmt: skip
            seen = _changes(pages[: n + 1], collection) | _changes(rest, collection)
            assert seen == everything, f"resuming from {page.cursor!r}: {everything - seen} missed"

    @_over(_parent)
    def test_conformance_children_come_with_their_parents_pages(
        self, provider: FakeProvider, connector: Connector, resource: str
    ) -> None:
        metadata = connector.metadata
        parent_key = metadata.resource(resource).collection_key
        first, *_ = provider.populate(resource)
        syncs = {"full": self.drain(connector, connector.full_sync(resource))}
        if metadata.resource(resource).supports_incremental:
            since = provider.now() - timedelta(hours=1)
            provider.update(resource, first)
            syncs["incremental"] = self.drain(
                connector, connector.incremental_sync(resource, since=since))  # fmt: skip
        for child in metadata.children_of(resource):
            expected = provider.ids(child.resource_type)
            assert expected, f"the fake made no {child.resource_type}"
            assert _ids(syncs["full"], child.collection_key) == sorted(expected)
            changed = {c["id"] for c in provider.children(child.resource_type, first)}
            for mode, pages in syncs.items():
                for page in pages:
                    parents = {
                        r.external_id for r in page.records if r.collection_key == parent_key
                    }
                    strays = [r.external_id for r in page.records
                              if r.collection_key == child.collection_key
                              and provider.parent_of(child.resource_type, r.external_id)
                              not in parents]  # fmt: skip
                    assert not strays, f"{mode} sync: {strays} come without their parent"
                    if first in parents:
                        assert changed <= set(_ids([page], child.collection_key)), (
                            f"{mode} sync: {first} comes without all its {child.resource_type}"
                        )

    @_over(_archivable)
    def test_conformance_archived_objects_are_marked_archived(
        self, provider: FakeProvider, connector: Connector, resource: str
    ) -> None:
        objects = provider.populate(resource)
        provider.archive(resource, objects[1])
        pages = self.drain(connector, connector.full_sync(resource))
        found = _records(pages, connector.metadata.resource(resource).collection_key)
        assert sorted(r.external_id for r in found) == sorted(objects)
        assert [r.external_id for r in found if r.archived] == [objects[1]]

    def test_conformance_bad_settings_are_named_without_secrets(
        self, provider: FakeProvider
    ) -> None:
        for name, value in provider.invalid_settings.items():
            for bad in (value, provider.api_key):
                with pytest.raises(ConfigError) as refused:
                    create_connector(provider.app_config(**{name: bad}))
                assert f"config.{name}" in str(refused.value)
                assert provider.api_key not in str(refused.value)

    def test_conformance_unknown_settings_are_named_without_their_value(
        self, provider: FakeProvider
    ) -> None:
        with pytest.raises(ConfigError) as refused:
            create_connector(provider.app_config(api_key=provider.api_key))
        assert "config.api_key" in str(refused.value)
        assert provider.api_key not in str(refused.value)

    def test_conformance_missing_api_key_names_the_variable(
        self, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv(provider.api_key_env)
        with pytest.raises(ConfigError, match=provider.api_key_env):
            create_connector(provider.app_config())

    @_over(_task)
    def test_conformance_throttling_and_server_errors_are_retried(
        self, provider: FakeProvider, connector: Connector, resource: str
    ) -> None:
        """A 429 is retried no sooner than its Retry-After asks, then a 500 and a 503."""
        expected = provider.populate(resource)
        provider.fail_next(1, 429, retry_after=RETRY_AFTER)
        provider.fail_next(1, 500, retry_after=0.01)
        provider.fail_next(1, 503, retry_after=0.01)
        pages = self.drain(connector, connector.full_sync(resource))
        assert [r.status for r in provider.requests[:4]] == [429, 500, 503, 200]
        limited, retry = provider.requests[:2]
        assert (retry.method, retry.path) == (limited.method, limited.path)
        assert retry.at - limited.at >= RETRY_AFTER, f"retried after {retry.at - limited.at:.3f} s"
        assert _ids(pages, connector.metadata.resource(resource).collection_key) == sorted(expected)

    @_over(_first_task)
    def test_conformance_server_errors_without_retry_after_are_retried(
        self, provider: FakeProvider, connector: Connector, resource: str
    ) -> None:
        expected = provider.populate(resource)
        provider.fail_next(1, 500)
        pages = self.drain(connector, connector.full_sync(resource))
        assert [r.status for r in provider.requests[:2]] == [500, 200]
        assert _ids(pages, connector.metadata.resource(resource).collection_key) == sorted(expected)

    @_over(_task)
    def test_conformance_exhausted_retries_raise_provider_error(
        self,
        provider: FakeProvider,
        connector: Connector,
        resource: str,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        provider.populate(resource)
        provider.fail_next(1000, 503, retry_after=0.01)  # the error body repeats the API key
        with pytest.raises(ProviderError) as failed:
            self.drain(connector, connector.full_sync(resource))
        assert len(provider.requests) > 1, "not retried"
        assert provider.api_key not in str(failed.value)
        assert not [r for r in caplog.records if provider.api_key in r.getMessage()]

    @_over(_task)
    def test_conformance_contradicting_pages_fail(
        self,
        provider: FakeProvider,
        connector: Connector,
        resource: str,
        contradiction: Contradiction,
    ) -> None:
        provider.populate(resource)
        provider.contradict(contradiction, times=None)
        try:
            pages = self.drain(connector, connector.full_sync(resource))
        except ProviderError:
            assert provider.served, "failed before the fake contradicted itself"
            return
        assert provider.served, "the fake never contradicted itself: no page continued"
        collection = connector.metadata.resource(resource).collection_key
        pytest.fail(f"{contradiction}: the sync ended quietly with "
                    f"{len(_ids(pages, collection))} objects")  # fmt: skip

    @_over(_ranged)
    def test_conformance_ranges_of_creation_time_split_the_full_sync(
        self, provider: FakeProvider, connector: Connector, resource: str
    ) -> None:
        """A listing that takes a creation-time range (its full sync is then split into
        shards): two ranges cut at an object's creation time hold every object once, each
        only its own, newest first (a shard ends once it has passed its range's start)."""
        collection = connector.metadata.resource(resource).collection_key
        everything = provider.populate(resource)
        floor = connector.shard_floor(resource)
        assert floor is not None, "a listing with created_range but no shard_floor"
        times = sorted(provider.created_at[(resource, i)] for i in everything)
        cut = times[len(times) // 2]
        assert floor <= times[0], f"objects created before the floor {floor}"
        older = self.drain(connector, connector.full_sync_range(
            resource, created_from=floor, created_before=cut))  # fmt: skip
        newer = self.drain(connector, connector.full_sync_range(
            resource, created_from=cut, created_before=None))  # fmt: skip
        assert sorted(_ids(older, collection) + _ids(newer, collection)) == sorted(everything)
        for pages, low, high in ((older, floor, cut), (newer, cut, None)):
            created = [r.created_at for r in _records(pages, collection)]
            stamped = [t for t in created if t is not None]
            assert len(stamped) == len(created), "records without their creation time"
            assert all(low <= t and (high is None or t < high) for t in stamped), (
                f"outside [{low}, {high})")  # fmt: skip
            assert stamped == sorted(stamped, reverse=True), "not newest first"

    @_over(_timed)
    def test_conformance_records_carry_source_times(
        self, provider: FakeProvider, connector: Connector, resource: str
    ) -> None:
        task_resource = connector.metadata.resource(resource).synced_with_parent or resource
        first, *_ = provider.populate(task_resource)
        if task_resource == resource:
            provider.update(resource, first)  # its change time is not its creation time
        pages = self.drain(connector, connector.full_sync(task_resource))
        found = _records(pages, connector.metadata.resource(resource).collection_key)
        assert found
        spec = provider.resources[resource]
        wrong = []
        for record in found:
            key = (resource, record.external_id)
            if spec.has_created_time and record.created_at != provider.created_at[key]:
                wrong.append(f"{key[1]} created_at {record.created_at}: {provider.created_at[key]}")
            if spec.has_updated_time and record.updated_at != provider.updated_at[key]:
                wrong.append(f"{key[1]} updated_at {record.updated_at}: {provider.updated_at[key]}")
        assert not wrong, f"unlike the provider's times: {wrong[:4]}"

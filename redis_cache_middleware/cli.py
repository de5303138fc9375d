"""`python -m redis_cache_middleware {stats,keys,inspect,purge}`: operator commands over the cache's Redis.

Exit codes: 0 done, 1 nothing found (or a namespace without entries), 2 usage error, several namespaces
to choose from, or Redis unreachable / failing. `--app module:attr` (or $RCM_APP) reads Redis URL, prefix,
namespace, version, rules, signing key and credential headers from the app's `CacheMiddleware`; flags
given explicitly win. Otherwise the signing key comes from $RCM_SIGNING_KEY (never the command line).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import ops
from .backends import RedisBackend
from .cli_parser import (
    DEFAULT_REDIS_URL,
    build_parser,
    check_selection,
    parse_header,
    positional_request,
    read_data,
    selected_rule,
)
from .keys import KeySpace
from .ops.app import AppConfigError, CacheSettings, cache_settings, import_app
from .ops.report import describe_entry, describe_rows, entries_text, stats_text
from .policy import CREDENTIAL_HEADERS
from .rules import CacheRule


class Failure(Exception):
    """A one-line reason to stop with exit code 2."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = _app_settings(args)
        positional_request(args)
        rule = selected_rule(args, settings) if args.command in ("inspect", "purge") else None
        check_selection(args, rule)
    except ValueError as exc:
        args.parser.error(str(exc))
    except AppConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args, rule, settings))
    except Failure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _app_settings(args: argparse.Namespace) -> CacheSettings | None:
    """Read --app's cache settings and fill in every option not given as a flag."""
    settings = None
    if args.app is not None:
        settings = cache_settings(import_app(args.app, args.factory), args.cache)
    elif args.cache is not None:
        raise ValueError("--cache needs --app")
    if args.redis_url is None:
        from_app = settings.redis_url if settings is not None else None
        args.redis_url = from_app or os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
    if args.prefix is None:
        args.prefix = settings.prefix if settings is not None else ops.DEFAULT_PREFIX
    if args.namespace is None and settings is not None:
        args.namespace = settings.namespace
    return settings


async def _run(args: argparse.Namespace, rule: CacheRule | None, settings: CacheSettings | None) -> int:
    backend = make_backend(args.redis_url, cluster=args.cluster, timeout=args.timeout)
    client = backend.client
    try:
        if args.namespace is None:
            args.namespace = await _only_namespace(client, args.prefix)
        args.settings = settings
        command = {"stats": _stats, "keys": _keys, "inspect": _inspect, "purge": _purge}[args.command]
        return await command(client, args, rule)
    except (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError) as exc:
        raise Failure(f"cannot reach Redis at {redact(args.redis_url)}: {_reason(exc)}") from exc
    except (RedisError, RedisClusterException) as exc:
        raise Failure(f"Redis at {redact(args.redis_url)}: {_reason(exc)}") from exc
    finally:
        await backend.aclose()


def make_backend(url: str, *, cluster: bool = False, timeout: float = 5.0) -> RedisBackend:
    """A backend (its `.client` does the work) for any URL `RedisBackend.from_url` takes; with `cluster`
    a `redis://` / `rediss://` URL is read as `redis+cluster://` / `rediss+cluster://`."""
    scheme, sep, rest = url.partition("://")
    if cluster and scheme.lower() in ("redis", "rediss"):
        url = f"{scheme}+cluster{sep}{rest}"
    try:
        return RedisBackend.from_url(url, timeout=timeout)
    except ValueError as exc:
        raise Failure(f"bad Redis URL {redact(url)}: {exc}") from exc


def redact(url: str) -> str:
    """`url` with any password replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


async def _only_namespace(client: Redis | RedisCluster, prefix: str) -> str:
    """The one namespace with entries under `prefix`; several or none: a Failure that lists them."""
    found = await ops.find_namespaces(client, prefix)
    if len(found) == 1:
        return next(iter(found))
    if not found:
        raise Failure(f"no cache entries under prefix {prefix!r}; give --namespace or --app")
    listing = "\n".join(
        f"  {name}: " + ", ".join(f"version {v} ({n} keys)" for v, n in versions.items())
        for name, versions in found.items()
    )
    raise Failure(f"several namespaces under prefix {prefix!r}; choose one with --namespace:\n{listing}")


async def _stats(client: Redis | RedisCluster, args: argparse.Namespace, _: CacheRule | None) -> int:
    stats = await ops.namespace_stats(
        client, prefix=args.prefix, namespace=args.namespace, sample=args.sample
    )
    if args.json:
        _print_json(stats)
        return 0
    print(stats_text(stats, redact(args.redis_url)))
    return 0


async def _keys(client: Redis | RedisCluster, args: argparse.Namespace, _: CacheRule | None) -> int:
    keys = await ops.sample_keys(client, prefix=args.prefix, namespace=args.namespace, limit=args.limit)
    if args.json:
        _print_json(keys)
    elif keys:
        print("\n".join(keys))
    return 0


async def _inspect(client: Redis | RedisCluster, args: argparse.Namespace, rule: CacheRule | None) -> int:
    if rule is not None and args.url is not None and (rule.batch is not None or rule.row is not None):
        return await _inspect_rows(client, args, rule)
    targets, where = await _targets(client, args, rule)
    keys = [key for pair in targets for key in pair if key is not None]
    signing_key = _signing_key(args)
    entries = [await ops.inspect(client, key, signing_key=signing_key) for key in keys]
    found = [entry for entry in entries if entry is not None]
    if args.json:
        _print_json(found)
    elif not found:
        print(f"no entry {where}{await _empty_note(client, args)}")
    else:
        print("\n\n".join(describe_entry(entry) for entry in found))
    return 0 if found else 1


async def _inspect_rows(client: Redis | RedisCluster, args: argparse.Namespace, rule: CacheRule) -> int:
    """A request of a row rule: its route's envelope and each row, in every version holding one."""
    reports = await _row_reports(client, args, rule)
    if isinstance(reports, str):
        print(f"not cached: the middleware passes this request to the app (BYPASS {reports})")
        return 1
    found = [report for report in reports if _stored_keys(report)]
    if args.json:
        _print_json(found)
    elif not found:
        print(f"no envelope or row stored for this request{await _empty_note(client, args)}")
    else:
        print("\n\n".join(describe_rows(report) for report in found))
    return 0 if found else 1


async def _row_reports(
    client: Redis | RedisCluster, args: argparse.Namespace, rule: CacheRule
) -> list[dict[str, Any]] | str:
    settings: CacheSettings | None = args.settings
    try:
        headers = [parse_header(text) for text in args.header]
        body = read_data(args.data)
        scope, header_map, key_body = ops.request_scope(args.method, args.url, body, headers, args.root_path)
    except (ValueError, OSError) as exc:
        raise Failure(str(exc)) from exc
    return await ops.inspect_rows(
        client,
        prefix=args.prefix,
        namespace=args.namespace,
        rule=rule,
        scope=scope,
        headers=header_map,
        body=key_body,
        credentials=_credentials(args),
        canon=settings.canon_for(rule, scope["method"], scope) if settings is not None else None,
        rules=settings.rules if settings is not None else (),
        version=args.version,
        signing_key=_signing_key(args),
    )


def _stored_keys(report: dict[str, Any]) -> list[str]:
    """The keys of a row report that hold something: the envelope, then each distinct row."""
    keys = [report["envelope_key"]] if report["envelope"] is not None else []
    rows = [row["key"] for row in report["rows"] if row["entry"] is not None]
    return list(dict.fromkeys(keys + rows))


async def _empty_note(client: Redis | RedisCluster, args: argparse.Namespace) -> str:
    """A note when the namespace has no entry at all (a wrong namespace or prefix, most likely)."""
    if await ops.sample_keys(client, prefix=args.prefix, namespace=args.namespace, limit=1):
        return ""
    found = await ops.find_namespaces(client, args.prefix)
    others = f"; namespaces with entries: {', '.join(found)}" if found else ""
    return f" (namespace {args.namespace} under prefix {args.prefix} has no entries at all{others})"


async def _purge(client: Redis | RedisCluster, args: argparse.Namespace, rule: CacheRule | None) -> int:
    verb = "would delete" if args.dry_run else "deleted"
    where = f"in namespace {args.namespace}"
    if args.key is not None or args.url is not None:
        if rule is not None and args.key is None and (rule.batch is not None or rule.row is not None):
            reports = await _row_reports(client, args, rule)
            if isinstance(reports, str):
                print(f"not cached: the middleware passes this request to the app (BYPASS {reports})")
                return 1
            keys = [key for report in reports for key in _stored_keys(report)]
            missing = "for this request's envelope or rows in any version"
        else:
            targets, missing = await _targets(client, args, rule)
            keys = [variant or key for key, variant in targets]
        done = [
            key
            for key in keys
            if (await client.exists(key) if args.dry_run else await ops.purge_request(client, key))
        ]
        note = "" if done else await _empty_note(client, args)
        print(f"{verb} {entries_text(len(done))}: {', '.join(done) if done else f'no entry {missing}'}{note}")
        return 1 if note else 0
    count = await ops.purge(
        client,
        prefix=args.prefix,
        namespace=args.namespace,
        version=args.version,
        rule=rule.key_name if rule is not None else None,
        tag=args.tag,
        all=args.all,
        dry_run=args.dry_run,
        batch=args.batch,
    )
    versions = f"version {args.version}" if args.version is not None else "every version"
    if args.tag is not None:
        extra = " and its tag set" if not args.dry_run else ""
        print(f"{verb} {entries_text(count)} tagged {args.tag!r} {where}{extra}")
    elif rule is not None:
        print(f"{verb} {entries_text(count)} of rule {rule.key_name} ({versions}) {where}")
    elif args.all and args.version is None:
        extra = " and its tag sets" if not args.dry_run else ""
        print(f"{verb} {entries_text(count)} (every version) {where}{extra}")
    else:
        print(f"{verb} {entries_text(count)} of version {args.version} {where}")
    note = "" if count else await _empty_note(client, args)
    if note:
        print(note.strip(" ()"), file=sys.stderr)
    return 1 if note else 0


async def _targets(
    client: Redis | RedisCluster, args: argparse.Namespace, rule: CacheRule | None
) -> tuple[list[tuple[str, str | None]], str]:
    """(key, variant key when a Vary marker is stored there) for --key, or for --url and friends in
    --version or else every version holding the request; and where they were looked for, for a message."""
    if args.key is not None:
        return [(args.key, None)], f"at {args.key}"
    assert rule is not None
    credentials = _credentials(args)
    try:
        headers = [parse_header(text) for text in args.header]
        body = read_data(args.data)
        _, header_map, _ = ops.request_scope(args.method, args.url, body, headers, args.root_path)
        digest = ops.request_digest_for(
            rule, args.method, args.url, body, headers, args.root_path, credentials
        )
    except (ValueError, OSError) as exc:
        raise Failure(str(exc)) from exc
    if args.version is not None:
        keys = [KeySpace(args.prefix, args.namespace, args.version).entry(rule.key_name, digest)]
        where = f"at {keys[0]}"
    else:
        keys = await ops.locate_request(
            client, prefix=args.prefix, namespace=args.namespace, rule=rule, digest=digest
        )
        where = "for this request in any version"
    signing_key = _signing_key(args)
    return [(key, await ops.follow_vary(client, key, header_map, signing_key)) for key in keys], where


def _credentials(args: argparse.Namespace) -> tuple[bytes, ...]:
    """--credential-header names, else the app's credential headers, else the default ones."""
    from_app = args.settings.credential_headers if args.settings is not None else CREDENTIAL_HEADERS
    return tuple(name.lower().encode("latin-1") for name in args.credential_header) or from_app


def _signing_key(args: argparse.Namespace) -> bytes | None:
    """The app's signing key with --app, else $RCM_SIGNING_KEY."""
    if args.settings is not None and args.settings.signing_key is not None:
        return bytes(args.settings.signing_key)
    value = os.environ.get("RCM_SIGNING_KEY")
    return value.encode() if value else None


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))

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
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import ops as admin
from .backends import RedisBackend
from .keys import KeySpace
from .ops.app import AppConfigError, CacheSettings, cache_settings, import_app
from .policy import CREDENTIAL_HEADERS
from .rules import CacheRule

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_NAMESPACE = "default"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"


class Failure(Exception):
    """A one-line reason to stop with exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--app",
        default=os.environ.get("RCM_APP") or None,
        metavar="MODULE:ATTR",
        help="read the cache's settings from this app's CacheMiddleware (default: $RCM_APP)",
    )
    common.add_argument("--factory", action="store_true", help="--app names a function returning the app")
    common.add_argument(
        "--cache", type=int, metavar="N", help="with --app: the N-th CacheMiddleware (0-based)"
    )
    common.add_argument(
        "--redis-url",
        help="redis://, rediss://, unix://, redis+cluster://h:p[,h:p], redis+sentinel://h:p/service "
        f"(default: the app's, else $REDIS_URL, else {DEFAULT_REDIS_URL})",
    )
    common.add_argument(
        "--cluster", action="store_true", help="treat --redis-url as a node of a Redis Cluster"
    )
    common.add_argument("--prefix", help=f"key prefix (default: the app's, else {admin.DEFAULT_PREFIX})")
    common.add_argument(
        "--namespace",
        help="the middleware's namespace (default: the app's, else the only one found under the prefix)",
    )
    common.add_argument("--timeout", type=float, default=5.0, help="seconds per Redis call (default: 5)")

    request = argparse.ArgumentParser(add_help=False)
    group = request.add_argument_group("a request (its key is computed the way the middleware does)")
    group.add_argument("--url", help="the URL as the app receives it, e.g. http://testserver/predict?x=1")
    group.add_argument(
        "--base-url",
        default=os.environ.get("RCM_BASE_URL", DEFAULT_BASE_URL),
        help="scheme and Host a relative URL is resolved against (default: $RCM_BASE_URL, else %(default)s)",
    )
    group.add_argument("--method", default="GET", help="request method (default: GET)")
    group.add_argument("--data", help="request body; @FILE reads a file, @- standard input")
    group.add_argument(
        "--header", action="append", default=[], metavar="'NAME: VALUE'", help="request header (repeatable)"
    )
    group.add_argument("--vary", action="append", default=[], metavar="NAME", help="the rule's vary headers")
    group.add_argument("--no-key-host", action="store_true", help="the rule has key_host=False")
    group.add_argument("--root-path", default="", help="ASGI root_path the app is mounted under")
    group.add_argument("--private", action="store_true", help="the rule has private=True")
    group.add_argument(
        "--credential-header",
        action="append",
        default=[],
        metavar="NAME",
        help="the middleware's credential_headers, when not the default (authorization, cookie, x-api-key)",
    )

    rule = argparse.ArgumentParser(add_help=False)
    rule.add_argument(
        "--path", "--rule-path", dest="rule_path", help="the rule's path, e.g. /items/{item_id}"
    )
    rule.add_argument("--rule", dest="rule_name", help="the rule's name in keys, e.g. /items/<item_id>")

    parser = argparse.ArgumentParser(
        prog="python -m redis_cache_middleware",
        description="Look into and purge the response cache in Redis.",
        epilog="Entries signed by the middleware's signing_key are checked with $RCM_SIGNING_KEY when set.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    stats = commands.add_parser("stats", parents=[common], help="entries per version and rule, memory, INFO")
    stats.add_argument("--sample", type=int, default=200, help="entries measured for the bytes estimate")
    stats.add_argument("--json", action="store_true", help="print JSON")

    keys = commands.add_parser("keys", parents=[common], help="a sample of the namespace's entry keys")
    keys.add_argument("--limit", type=int, default=20, help="at most this many keys (default: 20)")
    keys.add_argument("--json", action="store_true", help="print JSON")

    inspect = commands.add_parser(
        "inspect", parents=[common, rule, request], help="one entry: status, headers, age, TTL, body preview"
    )
    inspect.add_argument(
        "request", nargs="*", metavar="[METHOD] URL", help="the request, e.g. GET '/predict?x=1' (like --url)"
    )
    inspect.add_argument("--key", help="the entry's full key")
    inspect.add_argument("--version", help="with --url: the version (default: look in every version)")
    inspect.add_argument("--json", action="store_true", help="print JSON (a list of entries)")

    purge = commands.add_parser(
        "purge",
        parents=[common, rule, request],
        help="delete entries of a rule, a version, a tag, a request, or the whole namespace",
    )
    purge.add_argument("--tag", help="every entry indexed under this tag")
    purge.add_argument("--all", action="store_true", help="every entry of the namespace, and its tag sets")
    purge.add_argument("--version", help="only this version (alone: every entry of the version)")
    purge.add_argument("--key", help="one entry by its full key")
    purge.add_argument("--dry-run", action="store_true", help="count what would be deleted; delete nothing")
    purge.add_argument("--batch", type=int, default=500, help="SCAN COUNT and UNLINK batch size")
    purge.add_argument(
        "--l1-channel",
        default=admin.L1_CHANNEL,
        help="pub/sub channel of TieredBackend L1 invalidations ('' for none; default: %(default)s)",
    )
    for command in (stats, keys, inspect, purge):
        command.set_defaults(parser=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = _app_settings(args)
        _positional_request(args)
        rule = _rule(args, settings) if args.command in ("inspect", "purge") else None
        _check_selection(args, rule)
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
        args.prefix = settings.prefix if settings is not None else admin.DEFAULT_PREFIX
    if args.namespace is None and settings is not None:
        args.namespace = settings.namespace
    return settings


def _positional_request(args: argparse.Namespace) -> None:
    """`inspect [METHOD] URL`: the same as --method/--url; a relative URL is resolved on --base-url."""
    words = getattr(args, "request", [])
    if len(words) > 2:
        raise ValueError("inspect takes [METHOD] URL")
    if words:
        if args.url is not None:
            raise ValueError("give the URL once: as an argument or with --url")
        if len(words) == 2:
            args.method = words[0]
        args.url = words[-1]
    if args.command in ("inspect", "purge") and args.url is not None and args.url.startswith("/"):
        args.url = urljoin(args.base_url, args.url)


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
    found = await admin.find_namespaces(client, prefix)
    if len(found) == 1:
        return next(iter(found))
    if not found:
        raise Failure(f"no cache entries under prefix {prefix!r}; give --namespace or --app")
    listing = "\n".join(
        f"  {name}: " + ", ".join(f"version {v} ({n} keys)" for v, n in versions.items())
        for name, versions in found.items()
    )
    raise Failure(f"several namespaces under prefix {prefix!r}; choose one with --namespace:\n{listing}")


def _rule(args: argparse.Namespace, settings: CacheSettings | None = None) -> CacheRule | None:
    """The rule named by --path or --rule (from the app's rules with --app, else built from --method,
    --vary, --no-key-host and --private), or with --app the rule that routes --url."""
    if args.rule_path is not None and args.rule_name is not None:
        raise ValueError("give --path or --rule, not both")
    if settings is not None:
        return _app_rule(args, settings)
    if args.rule_path is None and args.rule_name is None:
        return None
    path = args.rule_path if args.rule_path is not None else "/"
    return CacheRule(
        path,
        ttl=1,
        methods=(args.method.upper(),),
        vary=args.vary,
        key_host=not args.no_key_host,
        name=args.rule_name,
        private=args.private,
    )


def _app_rule(args: argparse.Namespace, settings: CacheSettings) -> CacheRule | None:
    named = args.rule_path if args.rule_path is not None else args.rule_name
    if named is None and args.url is None:
        return None
    path = named if named is not None else urlsplit(args.url).path or "/"
    rule = settings.rule_for(args.method.upper(), path)
    if rule is None:
        known = ", ".join(f"{r.path} ({r.key_name})" for r in settings.rules)
        raise ValueError(f"no rule of the app for {path!r}; its rules: {known}")
    return rule


def _check_selection(args: argparse.Namespace, rule: CacheRule | None) -> None:
    if args.command == "inspect":
        if (args.key is None) == (args.url is None):
            raise ValueError("inspect needs --key KEY or --url URL with --path/--rule")
        if args.url is not None and rule is None:
            raise ValueError("--url needs the rule: --path /predict or --rule NAME")
    elif args.command == "purge":
        chosen = [
            name
            for name, on in (
                ("--key", args.key is not None),
                ("--path/--rule", rule is not None),
                ("--tag", args.tag is not None),
                ("--all", args.all),
            )
            if on
        ]
        if len(chosen) > 1:
            raise ValueError(
                f"purge takes one of --key, --path/--rule, --tag, --all; got {', '.join(chosen)}"
            )
        if not chosen and args.version is None:
            raise ValueError("purge needs --path/--rule, --tag, --all, --version or --key")
        if args.url is not None and rule is None:
            raise ValueError("--url needs the rule: --path /predict or --rule NAME")
        if args.version is not None and (args.key is not None or args.tag is not None):
            raise ValueError("--version narrows --path/--rule or --all, not --key or --tag")
    for name in ("limit", "sample", "batch"):
        if getattr(args, name, 1) < 1:
            raise ValueError(f"--{name} must be at least 1")


async def _stats(client: Redis | RedisCluster, args: argparse.Namespace, _: CacheRule | None) -> int:
    stats = await admin.namespace_stats(
        client, prefix=args.prefix, namespace=args.namespace, sample=args.sample
    )
    if args.json:
        _print_json(stats)
        return 0
    info = stats["redis"]
    lookups = info["keyspace_hits"] + info["keyspace_misses"]
    hit_rate = f" ({info['keyspace_hits'] / lookups:.1%} hit rate)" if lookups else ""
    memory = (
        f"~{admin.human_bytes(stats['bytes_estimate'])} (estimate: MEMORY USAGE of "
        f"{stats['bytes_sampled_keys']} sampled entries, scaled)"
        if stats["entries"]
        else "0B"
    )
    lines = [
        f"namespace   {stats['namespace']} (prefix {stats['prefix']}) on {redact(args.redis_url)}",
        f"entries     {stats['entries']}",
        f"memory      {memory}",
        f"tag sets    {stats['tag_sets']}",
    ]
    if stats["other_keys"]:
        lines.append(f"other keys  {stats['other_keys']}")
    for title, counts in (("versions", stats["versions"]), ("rules", stats["rules"])):
        if counts:
            lines.append(f"{title}:")
            width = max(len(name) for name in counts)
            lines += [f"  {name:<{width}}  {count}" for name, count in counts.items()]
    nodes = f" on {info['nodes']} primaries" if info["nodes"] > 1 else ""
    lines += [
        f"redis       {info['redis_version']}{nodes}, used_memory {info['used_memory_human']}, "
        f"maxmemory-policy {info['maxmemory_policy']}",
        f"            server-wide: hits {info['keyspace_hits']}, misses {info['keyspace_misses']}{hit_rate}, "
        f"evicted {info['evicted_keys']}, clients {info['connected_clients']}",
    ]
    print("\n".join(lines + _counter_lines(stats["counters"])))
    return 0


def _counter_lines(counters: dict[str, dict[str, float]]) -> list[str]:
    """Per rule, from the Redis-side counters of every process: responses, hit ratio, app time saved."""
    if not counters:
        return ["served      no counters yet (the middleware writes them at most once a second)"]
    lines = ["served (every process, from Redis counters):"]
    width = max(len(name) for name in counters)
    for name, fields in sorted(counters.items()):
        answered = sum(fields.get(o, 0.0) for o in ("hit", "stale", "collapsed", "revalidated"))
        total = answered + fields.get("miss", 0.0)
        ratio = f"{answered / total:.1%}" if total else "-"
        line = f"  {name:<{width}}  {int(total + fields.get('bypass', 0.0))} responses, hit ratio {ratio}, "
        line += f"app time saved {fields.get('saved_seconds', 0.0):.3f} s"
        if fields.get("rows_hit") or fields.get("rows_computed"):
            hit, computed = int(fields.get("rows_hit", 0)), int(fields.get("rows_computed", 0))
            line += f", rows {hit} hit / {computed} computed"
        lines.append(line)
    return lines


async def _keys(client: Redis | RedisCluster, args: argparse.Namespace, _: CacheRule | None) -> int:
    keys = await admin.sample_keys(client, prefix=args.prefix, namespace=args.namespace, limit=args.limit)
    if args.json:
        _print_json(keys)
    elif keys:
        print("\n".join(keys))
    return 0


async def _inspect(client: Redis | RedisCluster, args: argparse.Namespace, rule: CacheRule | None) -> int:
    targets, where = await _targets(client, args, rule)
    keys = [key for pair in targets for key in pair if key is not None]
    signing_key = _signing_key(args)
    entries = [await admin.inspect(client, key, signing_key=signing_key) for key in keys]
    found = [entry for entry in entries if entry is not None]
    if args.json:
        _print_json(found)
    elif not found:
        print(f"no entry {where}{await _empty_note(client, args)}")
    else:
        print("\n\n".join(_describe_entry(entry) for entry in found))
    return 0 if found else 1


async def _empty_note(client: Redis | RedisCluster, args: argparse.Namespace) -> str:
    """A note when the namespace has no entry at all (a wrong namespace or prefix, most likely)."""
    if await admin.sample_keys(client, prefix=args.prefix, namespace=args.namespace, limit=1):
        return ""
    found = await admin.find_namespaces(client, args.prefix)
    others = f"; namespaces with entries: {', '.join(found)}" if found else ""
    return f" (namespace {args.namespace} under prefix {args.prefix} has no entries at all{others})"


async def _purge(client: Redis | RedisCluster, args: argparse.Namespace, rule: CacheRule | None) -> int:
    verb = "would delete" if args.dry_run else "deleted"
    where = f"in namespace {args.namespace}"
    if args.key is not None or args.url is not None:
        targets, missing = await _targets(client, args, rule)
        keys = [variant or key for key, variant in targets]
        done = [
            key
            for key in keys
            if (
                await client.exists(key)
                if args.dry_run
                else await admin.purge_request(client, key, l1_channel=args.l1_channel)
            )
        ]
        note = "" if done else await _empty_note(client, args)
        print(f"{verb} {_entries(len(done))}: {', '.join(done) if done else f'no entry {missing}'}{note}")
        return 1 if note else 0
    count = await admin.purge(
        client,
        prefix=args.prefix,
        namespace=args.namespace,
        version=args.version,
        rule=rule.key_name if rule is not None else None,
        tag=args.tag,
        all=args.all,
        dry_run=args.dry_run,
        batch=args.batch,
        l1_channel=args.l1_channel,
    )
    versions = f"version {args.version}" if args.version is not None else "every version"
    if args.tag is not None:
        extra = " and its tag set" if not args.dry_run else ""
        print(f"{verb} {_entries(count)} tagged {args.tag!r} {where}{extra}")
    elif rule is not None:
        print(f"{verb} {_entries(count)} of rule {rule.key_name} ({versions}) {where}")
    elif args.all and args.version is None:
        extra = " and its tag sets" if not args.dry_run else ""
        print(f"{verb} {_entries(count)} (every version) {where}{extra}")
    else:
        print(f"{verb} {_entries(count)} of version {args.version} {where}")
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
    from_app = args.settings.credential_headers if args.settings is not None else CREDENTIAL_HEADERS
    credentials = tuple(name.lower().encode("latin-1") for name in args.credential_header) or from_app
    try:
        headers = [_header(text) for text in args.header]
        body = _body(args.data)
        _, header_map, _ = admin.request_scope(args.method, args.url, body, headers, args.root_path)
        digest = admin.request_digest_for(
            rule, args.method, args.url, body, headers, args.root_path, credentials
        )
    except (ValueError, OSError) as exc:
        raise Failure(str(exc)) from exc
    if args.version is not None:
        keys = [KeySpace(args.prefix, args.namespace, args.version).entry(rule.key_name, digest)]
        where = f"at {keys[0]}"
    else:
        keys = await admin.locate_request(
            client, prefix=args.prefix, namespace=args.namespace, rule=rule, digest=digest
        )
        where = "for this request in any version"
    signing_key = _signing_key(args)
    return [(key, await admin.follow_vary(client, key, header_map, signing_key)) for key in keys], where


def _signing_key(args: argparse.Namespace) -> bytes | None:
    """The app's signing key with --app, else $RCM_SIGNING_KEY."""
    if args.settings is not None and args.settings.signing_key is not None:
        return bytes(args.settings.signing_key)
    value = os.environ.get("RCM_SIGNING_KEY")
    return value.encode() if value else None


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise ValueError(f"--header must read 'Name: value', got {text!r}")
    return name.strip(), value.strip()


def _body(data: str | None) -> bytes | None:
    if data is None:
        return None
    if data == "@-":
        return sys.stdin.buffer.read()
    if data.startswith("@"):
        return Path(data[1:]).read_bytes()
    return data.encode("utf-8")


def _entries(count: int) -> str:
    return f"{count} entr{'y' if count == 1 else 'ies'}"


def _describe_entry(entry: dict[str, Any]) -> str:
    redis_ttl = "no expiry" if entry["redis_ttl"] is None else f"{entry['redis_ttl']:.1f} s"
    lines = [f"key         {entry['key']}"]
    if entry["kind"] == "invalid":
        lines.append(f"invalid     {entry['size']} bytes that are not an entry for this key (read as a miss)")
    elif entry["kind"] == "vary-marker":
        lines.append(f"vary marker responses vary on {', '.join(entry['vary'])}; see the variant's key")
    else:
        state = "fresh" if entry["fresh"] else "stale"
        lines += [
            f"status      {entry['status']}",
            f"age         {entry['age']:.1f} s of {entry['ttl']:g} s ttl ({state})",
        ]
    lines.append(f"redis ttl   {redis_ttl}")
    if entry["signature"] is not None:
        lines.append(f"signature   {entry['signature']}")
    if entry["kind"] == "response":
        lines += [
            f"body        {entry['body_bytes']} bytes (stored entry {entry['size']} bytes)",
            "headers",
            *[f"  {name}: {value}" for name, value in entry["headers"]],
            "body preview",
            f"  {entry['body_preview']}",
        ]
    return "\n".join(lines)


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))

"""The argument parser of `python -m redis_cache_middleware`: every subcommand and its options, and what
the options select (the request, its rule) checked before Redis is reached."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from .ops import DEFAULT_PREFIX
from .ops.app import CacheSettings
from .rules import CacheRule

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"


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
    common.add_argument("--prefix", help=f"key prefix (default: the app's, else {DEFAULT_PREFIX})")
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
    purge.add_argument(
        "request", nargs="*", metavar="[METHOD] URL", help="one request's entries (like --url), e.g. GET /x"
    )
    purge.add_argument("--tag", help="every entry indexed under this tag")
    purge.add_argument("--all", action="store_true", help="every entry of the namespace, and its tag sets")
    purge.add_argument("--version", help="only this version (alone: every entry of the version)")
    purge.add_argument("--key", help="one entry by its full key")
    purge.add_argument("--dry-run", action="store_true", help="count what would be deleted; delete nothing")
    purge.add_argument("--batch", type=int, default=500, help="SCAN COUNT and UNLINK batch size")
    for command in (stats, keys, inspect, purge):
        command.set_defaults(parser=command)
    return parser


def positional_request(args: argparse.Namespace) -> None:
    """`inspect|purge [METHOD] URL`: the same as --method/--url; a relative URL is resolved on --base-url."""
    words = getattr(args, "request", [])
    if len(words) > 2:
        raise ValueError(f"{args.command} takes [METHOD] URL")
    if words:
        if args.url is not None:
            raise ValueError("give the URL once: as an argument or with --url")
        if len(words) == 2:
            args.method = words[0]
        args.url = words[-1]
    if args.command in ("inspect", "purge") and args.url is not None and args.url.startswith("/"):
        args.url = urljoin(args.base_url, args.url)


def selected_rule(args: argparse.Namespace, settings: CacheSettings | None = None) -> CacheRule | None:
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


def check_selection(args: argparse.Namespace, rule: CacheRule | None) -> None:
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


def parse_header(text: str) -> tuple[str, str]:
    """(name, value) of a --header 'Name: value'; ValueError otherwise."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise ValueError(f"--header must read 'Name: value', got {text!r}")
    return name.strip(), value.strip()


def read_data(data: str | None) -> bytes | None:
    """The body --data gives: the text itself, @FILE's bytes, or standard input's for @-."""
    if data is None:
        return None
    if data == "@-":
        return sys.stdin.buffer.read()
    if data.startswith("@"):
        return Path(data[1:]).read_bytes()
    return data.encode("utf-8")

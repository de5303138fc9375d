"""Operator answers as the text the CLI prints: namespace stats, counters, one stored entry."""

from __future__ import annotations

from typing import Any

from .stats import human_bytes


def stats_text(stats: dict[str, Any], where: str) -> str:
    """`namespace_stats(...)` as lines: entries, memory, versions, rules, Redis figures, counters."""
    info = stats["redis"]
    lookups = info["keyspace_hits"] + info["keyspace_misses"]
    hit_rate = f" ({info['keyspace_hits'] / lookups:.1%} hit rate)" if lookups else ""
    memory = (
        f"~{human_bytes(stats['bytes_estimate'])} (estimate: MEMORY USAGE of "
        f"{stats['bytes_sampled_keys']} sampled entries, scaled)"
        if stats["entries"]
        else "0B"
    )
    lines = [
        f"namespace   {stats['namespace']} (prefix {stats['prefix']}) on {where}",
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
    return "\n".join(lines + counter_lines(stats["counters"]))


def counter_lines(counters: dict[str, dict[str, float]]) -> list[str]:
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


def entries_text(count: int) -> str:
    return f"{count} entr{'y' if count == 1 else 'ies'}"


def describe_entry(entry: dict[str, Any]) -> str:
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


def describe_rows(report: dict[str, Any]) -> str:
    """`inspect_rows(...)` of one version as lines: the answer, the envelope, each row, the routes shared."""
    rows = report["rows"]
    stored = sum(row["entry"] is not None and row["entry"].get("fresh", False) for row in rows)
    envelope = report["envelope"]
    lines = [
        f"rule        {report['rule']} (row space {report['space']}, version {report['version']})",
        f"answer      {report['answer']}: envelope {'stored' if envelope else 'not stored'}, "
        f"{stored} of {len(rows)} row{'s' if len(rows) != 1 else ''} stored and fresh",
        f"envelope    {report['envelope_key']}",
    ]
    if envelope is None:
        lines.append("  not stored")
    elif envelope["kind"] != "response":
        lines.append(f"  {envelope['kind']} ({envelope['size']} bytes): read as a miss")
    else:
        state = "fresh" if envelope["fresh"] else "stale"
        lines += [
            f"  status    {envelope['status']}",
            f"  age       {envelope['age']:.1f} s of {envelope['ttl']:g} s ttl ({state}), "
            f"redis ttl {_redis_ttl(envelope['redis_ttl'])}",
            *([f"  signature {envelope['signature']}"] if envelope["signature"] is not None else []),
            "  headers",
            *[f"    {name}: {value}" for name, value in envelope["headers"]],
            f"  body      {report['envelope_preview']}",
        ]
    for index, row in enumerate(rows, 1):
        lines.append(f"row {index:<7} {row['key']}")
        entry = row["entry"]
        if entry is None:
            lines.append("  not stored")
        elif entry["kind"] == "row":
            lines += [
                f"  value     {entry['body_preview']}",
                f"  stored    app time {entry['compute_seconds'] * 1000:.1f} ms, "
                f"redis ttl {_redis_ttl(entry['redis_ttl'])}",
            ]
        elif entry["kind"] != "response":
            lines.append(f"  {entry['kind']} ({entry['size']} bytes): read as a miss")
        else:
            state = "fresh" if entry["fresh"] else "stale"
            lines += [
                f"  value     {entry['body_preview']}",
                f"  age       {entry['age']:.1f} s of {entry['ttl']:g} s ttl ({state}), "
                f"redis ttl {_redis_ttl(entry['redis_ttl'])}",
            ]
    if "answer_preview" in report:
        lines.append(f"answer body {report['answer_preview']}")
    for other in report["shared_with"]:
        envelope_state = "stored" if other["envelope_stored"] else "not stored yet"
        lines.append(
            f"shared with {'/'.join(other['methods'])} {other['path']} (rule {other['rule']}): these rows "
            f"answer its requests too; its envelope is {envelope_state}"
        )
    return "\n".join(lines)


def _redis_ttl(seconds: float | None) -> str:
    return "no expiry" if seconds is None else f"{seconds:.1f} s"

#!/usr/bin/env python3
"""Regenerates tests/data/github/ from GitHub's own published packages.

How the files were made (run from the repository root):

    mkdir -p /tmp/npm && cd /tmp/npm
    npm pack @octokit/webhooks-examples @octokit/openapi
    for f in *.tgz; do tar xzf "$f" --one-top-level="${f%.tgz}"; done
    cd - && python3 tests/extract_github_fixtures.py /tmp/npm/octokit-webhooks-examples-*/package \
        /tmp/npm/octokit-openapi-*/package

Webhook payloads are copied unchanged (one example each, chosen below). From the
OpenAPI description only the operations Packetary calls are kept, dereferenced
(no $ref), with descriptions and examples dropped to keep the file small; the
schemas themselves (types, enums, required, nullable) are untouched.
"""
import json
import sys
from pathlib import Path

OUT = Path(__file__).parent / "data" / "github"

# (file name, event name, predicate on the example)
PAYLOADS = [
    ("ping.json", "ping", lambda x: "hook" in x),
    ("push-branch.json", "push", lambda x: x["ref"].startswith("refs/heads/")),
    ("push-tag-deleted.json", "push", lambda x: x["deleted"]),
    ("pull_request-opened.json", "pull_request", lambda x: x["action"] == "opened"),
    ("pull_request-synchronize.json", "pull_request", lambda x: x["action"] == "synchronize"),
    ("pull_request-closed.json", "pull_request", lambda x: x["action"] == "closed"),
    ("pull_request-labeled.json", "pull_request", lambda x: x["action"] == "labeled"),
    ("issue_comment-created.json", "issue_comment", lambda x: x["action"] == "created"),
    ("check_run-rerequested.json", "check_run", lambda x: x["action"] == "rerequested"),
    ("issues-opened.json", "issues", lambda x: x["action"] == "opened"),
]

# (method, path) of every GitHub API call Packetary makes.
OPERATIONS = [
    ("post", "/repos/{owner}/{repo}/statuses/{sha}"),
    ("get", "/repos/{owner}/{repo}/collaborators/{username}/permission"),
    ("post", "/app/installations/{installation_id}/access_tokens"),
]

DROP = {"description", "example", "examples", "summary", "externalDocs", "x-github", "tags"}


def strip(node, names=False):
    """Drops annotations; `names` is true for a `properties` map, whose keys are field
    names (a field may well be called `description`) and are all kept."""
    if isinstance(node, dict):
        return {
            k: strip(v, k == "properties" and not names)
            for k, v in node.items()
            if names or k not in DROP
        }
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def main(examples_dir, openapi_dir):
    index = json.load(open(Path(examples_dir) / "api.github.com" / "index.json"))
    by_name = {e["name"]: e["examples"] for e in index}
    OUT.mkdir(parents=True, exist_ok=True)
    for file_name, event, pick in PAYLOADS:
        example = next(x for x in by_name[event] if pick(x))
        (OUT / file_name).write_text(json.dumps(example, indent=1) + "\n")
    spec = json.load(open(Path(openapi_dir) / "generated" / "api.github.com.deref.json"))
    subset = {"openapi": spec["openapi"], "info": {"version": spec["info"]["version"]}, "paths": {}}
    for method, path in OPERATIONS:
        op = spec["paths"][path][method]
        kept = {
            "operationId": op["operationId"],
            "parameters": strip(op.get("parameters", [])),
            "requestBody": strip(op.get("requestBody", {})),
            "responses": {
                code: strip(r) for code, r in op["responses"].items() if code.startswith("2")
            },
        }
        subset["paths"].setdefault(path, {})[method] = kept
    (OUT / "openapi-subset.json").write_text(json.dumps(subset, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

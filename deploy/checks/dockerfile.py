#!/usr/bin/env python3
"""Checks of deploy/container/Dockerfile that hadolint cannot make.

  - Both `cargo build` steps (the cached dependency layer and the real
    build) run exactly BUILD_COMMAND, the release build CI's tools know.
  - The dependency layer's stub files are exactly the crate roots cargo
    needs: every lib/bin target of every workspace member (from `cargo
    metadata`), so a new binary or crate cannot break the image's build
    unnoticed; and its COPY lines bring every member's Cargo.toml.
  - The binaries copied into the runtime image are exactly the bin targets
    of the packages built.
  - Every COPY source exists and is not excluded by the ignore file.
  - The build image's Rust is at least the workspace's rust-version.

Usage: dockerfile.py REPO_ROOT [CARGO_METADATA_JSON]
Without the metadata (no cargo on the machine) the checks that need it are
skipped with a notice.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import sys
from pathlib import Path

DOCKERFILE = "deploy/container/Dockerfile"
IGNOREFILE = "deploy/container/Dockerfile.dockerignore"
BUILD_COMMAND = "cargo build --release --locked -p idv-ingest -p idv-worker --bins"
PACKAGES = ("idv-ingest", "idv-worker")


def instructions(text: str) -> list[tuple[int, str, str]]:
    """(line, INSTRUCTION, arguments) with continuations joined and
    comments dropped."""
    result: list[tuple[int, str, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        start = i + 1
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.rstrip().endswith("\\") and i < len(lines):
            nxt = lines[i]
            i += 1
            if nxt.lstrip().startswith("#"):
                continue
            line = line.rstrip()[:-1] + " " + nxt.strip()
        word, _, rest = line.strip().partition(" ")
        result.append((start, word.upper(), rest.strip()))
    return result


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's ignore rules, as far as this file uses them: patterns
    relative to the context root, a directory pattern covers what is under
    it, `**` any depth, later `!` exceptions win."""
    verdict = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.strip("/")
        candidates = [path]
        parts = path.split("/")
        candidates += ["/".join(parts[:n]) for n in range(1, len(parts))]
        regex = fnmatch.translate(pattern).replace(".*.*", ".*")
        if pattern.startswith("**/"):
            regex = "(?:.*/)?" + fnmatch.translate(pattern[3:])
        if any(re.match(regex, c) for c in candidates):
            verdict = not negate
    return verdict


def explicit_bins(package: dict) -> set[str]:
    """Names of the [[bin]] targets a manifest declares itself: cargo wants
    their files to exist whichever package it builds."""
    text = Path(package["manifest_path"]).read_text(encoding="utf-8")
    names = set()
    for block in re.split(r"^\[", text, flags=re.M):
        if block.startswith("[bin]]"):
            found = re.search(r'^name\s*=\s*"([^"]+)"', block, re.M)
            if found:
                names.add(found.group(1))
    return names


def main(argv: list[str]) -> int:
    root = Path(argv[1])
    metadata = json.loads(Path(argv[2]).read_text()) if len(argv) > 2 and argv[2] else None
    errors: list[str] = []
    notes: list[str] = []
    text = (root / DOCKERFILE).read_text(encoding="utf-8")
    steps = instructions(text)
    patterns = [
        line.strip()
        for line in (root / IGNOREFILE).read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]

    builds = [(n, args) for n, ins, args in steps if ins == "RUN" and "cargo build" in args]
    if len(builds) != 2:
        errors.append(f"expected 2 `cargo build` steps (dependency layer, real build), found {len(builds)}")
    for line, args in builds:
        commands = [c.strip() for c in re.split(r"&&|;", args) if "cargo build" in c]
        for command in commands:
            if " ".join(command.split()) != BUILD_COMMAND:
                errors.append(f"line {line}: `{command}` is not the build CI knows: `{BUILD_COMMAND}`")

    # COPY sources exist and get through the ignore file.
    for line, ins, args in steps:
        if ins != "COPY" or "--from=" in args:
            continue
        words = [w for w in args.split() if not w.startswith("--")]
        for source in words[:-1]:
            if source == ".":
                continue
            if not (root / source).exists():
                errors.append(f"line {line}: COPY {source}: no such file in the repository")
            elif ignored(source, patterns):
                errors.append(f"line {line}: COPY {source}: excluded by {IGNOREFILE}")
    for needed in ("Cargo.toml", "Cargo.lock", "shared/fixtures", "worker/migrations", "worker/templates"):
        if ignored(needed, patterns):
            errors.append(f"{needed} is excluded by {IGNOREFILE}, but the build needs it")

    # Rust version of the build image.
    image = next((args for _, ins, args in steps if ins == "FROM" and "rust:" in args), "")
    version = re.search(r"rust:(\d+)\.(\d+)", image)
    declared = re.search(r'^rust-version\s*=\s*"([\d.]+)"', (root / "Cargo.toml").read_text(), re.M)
    wanted = declared.group(1) if declared else "1.0"
    want = tuple(int(x) for x in wanted.split(".")[:2])
    if not version:
        errors.append(f"the build stage's image {image!r} names no Rust version (rust:1.NN-…)")
    elif (int(version.group(1)), int(version.group(2))) < want:
        errors.append(f"the build image {image!r} is older than the workspace's rust-version {wanted}")

    # Binaries in the runtime image.
    copied = set()
    for _, ins, args in steps:
        if ins == "COPY" and "--from=build" in args:
            copied |= {Path(w).name for w in args.split()[1:-1]}
    if metadata is None:
        notes.append("no cargo metadata (cargo missing): stub and binary lists not compared with the workspace")
    else:
        members = [p for p in metadata["packages"] if p["id"] in metadata["workspace_members"]]
        bins = {t["name"] for p in members if p["name"] in PACKAGES for t in p["targets"] if "bin" in t["kind"]}
        if copied != bins:
            errors.append(
                f"runtime image gets {sorted(copied)}, but {', '.join(PACKAGES)} build {sorted(bins)}"
            )
        # The dependency layer's stubs and manifests.
        layer = next((args for _, args in builds[:1]), "")
        stubs = set(re.findall(r"[\w/.-]+\.rs", layer))
        copies = {
            args.split()[0]
            for _, ins, args in steps
            if ins == "COPY" and args.split()[0].endswith("Cargo.toml")
        }
        workspace = Path(metadata["workspace_root"])
        for package in members:
            manifest = Path(package["manifest_path"]).relative_to(workspace).as_posix()
            if manifest != "Cargo.toml" and manifest not in copies:
                errors.append(f"the dependency layer does not COPY {manifest} (a workspace member)")
            for target in package["targets"]:
                if not set(target["kind"]) & {"lib", "bin", "proc-macro", "rlib", "cdylib"}:
                    continue
                if "bin" in target["kind"] and package["name"] not in PACKAGES and target["name"] not in explicit_bins(package):
                    continue  # another member's auto-discovered binary: cargo does not look for it
                source = Path(os.path.normpath(target["src_path"])).relative_to(workspace).as_posix()
                if source not in stubs:
                    errors.append(
                        f"the dependency layer has no stub for {source} ({package['name']} {target['kind'][0]} "
                        f"{target['name']}): the image's build would fail"
                    )
    for note in notes:
        print(f"notice: {note}")
    for error in errors:
        print(f"error: {DOCKERFILE}: {error}")
    if errors:
        return 1
    print(f"ok: {DOCKERFILE}: builds with `{BUILD_COMMAND}`, copies {', '.join(sorted(copied))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

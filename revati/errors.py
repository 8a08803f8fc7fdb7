"""Typed errors. Each carries the object it is about; only the CLI turns them into messages."""

from __future__ import annotations

from typing import Iterable


class RevatiError(Exception):
    """Base class of every error revati raises on purpose."""


class SchemaError(RevatiError):
    """A table or file does not match revati's trace schema."""

    def __init__(self, where: object, problem: str):
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}")


class BadInput(RevatiError):
    """A user-supplied file or value cannot be used (missing, truncated, foreign, wrong unit)."""

    def __init__(self, path: object, problem: str):
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class BadRow(BadInput):
    """One row of a user-supplied table is unusable; ``row`` is its 1-based data row number."""

    def __init__(self, path: object, row: int, problem: str):
        self.row = row
        super().__init__(path, f"row {row}: {problem}")


class UnknownKeys(BadInput):
    """A mapping read into a configuration (JSON) has keys it does not know: a misspelt key, or
    one written by a different version of revati. ``keys``: those keys; ``known``: the accepted ones."""

    def __init__(self, where: object, keys: Iterable[str], known: Iterable[str]):
        self.keys = sorted(keys)
        self.known = sorted(known)
        super().__init__(where, f"unknown key(s) {', '.join(map(repr, self.keys))}; known: {', '.join(self.known)}")


class UnknownGPU(RevatiError):
    def __init__(self, name: str, known: Iterable[str]):
        self.name = name
        self.known = sorted(known)
        super().__init__(f"unknown GPU {name!r}; known: {', '.join(self.known)}")


class UnsupportedOp(RevatiError):
    def __init__(self, op: object, reason: str = ""):
        self.op = op
        self.reason = reason
        super().__init__(f"unsupported op {op!r}" + (f": {reason}" if reason else ""))


class QueryError(RevatiError):
    """An SQL query against the kernel database failed."""

    def __init__(self, sql: str, message: str):
        self.sql = sql
        self.message = message
        super().__init__(message)


class ReadOnlyQuery(QueryError):
    """A query would change something (COPY ... TO, CREATE, INSERT, ATTACH, INSTALL, SET, ...):
    queries over the kernel database only read; ``statement`` is the refused statement's keyword."""

    def __init__(self, sql: str, statement: str):
        self.statement = statement
        super().__init__(sql, f"SQL error: {statement} refused: queries are read-only (SELECT, WITH, DESCRIBE, "
                              "SUMMARIZE, SHOW, EXPLAIN); write a result with -o FILE")


class ModelNotFound(RevatiError):
    def __init__(self, gpu: str, where: object):
        self.gpu = gpu
        self.where = where
        super().__init__(f"no fitted models for GPU {gpu!r} in {where}")


class EmulationError(RevatiError):
    """The emulated program or the emulation itself failed."""


class DeadlockError(EmulationError):
    """Every emulated process is blocked and nothing can wake any of them."""

    def __init__(self, states: object):
        self.states = states
        super().__init__(f"deadlock: every process is blocked with no pending wake-up: {states}")


class NativeBuildError(EmulationError):
    """A native helper (fake CUDA guard, stub libcuda) could not be built."""

    def __init__(self, what: str, detail: str):
        self.what = what
        self.detail = detail
        super().__init__(f"cannot build {what}: {detail}")


class BackendUnavailable(RevatiError):
    """A trace backend cannot run here; ``missing`` says what is absent and how to get it."""

    def __init__(self, backend: str, missing: list[str]):
        self.backend = backend
        self.missing = list(missing)
        super().__init__(f"the {backend} backend cannot run here: " + "; ".join(self.missing))


class TraceError(RevatiError):
    """`revati trace` could not record the run (the command's own failure is not one)."""

    def __init__(self, where: object, problem: str):
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}")


class CollectiveFailed(EmulationError):
    """A virtual collective cannot complete: a rank exited, or the ranks disagree on its shape."""

    def __init__(self, group_key: object, seq: int, missing_ranks: Iterable[int], reason: str):
        self.group_key = group_key
        self.seq = seq
        self.missing_ranks = sorted(missing_ranks)
        self.reason = reason
        missing = f" (missing ranks {self.missing_ranks})" if self.missing_ranks else ""
        super().__init__(f"collective {group_key!r} #{seq} failed{missing}: {reason}")


class TimekeeperLost(EmulationError):
    """The connection to the emulation's timekeeper failed or was refused."""

    def __init__(self, address: object, reason: str):
        self.address = address
        self.reason = reason
        super().__init__(f"timekeeper at {address}: {reason}")


class UnsupportedEngine(EmulationError):
    """A serving engine (or a mode of it) that the shim cannot emulate faithfully."""

    def __init__(self, engine: str, version: str, reason: str):
        self.engine = engine
        self.version = version
        self.reason = reason
        super().__init__(f"revati cannot emulate {engine} {version}: {reason}")

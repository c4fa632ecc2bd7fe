"""The task spec: what a customer asks to run, validated once here so every part reads the same thing.

`spec_hash(spec)` is the on-chain `specHash`: sha256 of the spec's canonical JSON (RFC 8785) after
normalisation (defaults filled in, unset optional fields dropped), so two specs that mean the same thing
hash the same. `max_price_per_replica` (wei, up to 2**96) is written as a decimal string in that JSON.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from hashgrid.canonical import canonical_json, is_sha256_hex, sha256_bytes, sha256_file
from hashgrid.errors import ContentMissing, DigestMismatch, SpecInvalid

SPEC_VERSION = 1
MAX_REPLICAS = 16
MAX_UINT96 = 2**96 - 1
MAX_INPUTS = 1024
MAX_OUTPUTS = 256
MAX_PROVIDER_LIST = 256  # addresses a spec may allow or exclude
MAX_INPUT_BYTES = 64 * 1024**3  # one input blob
MAX_PATH_LEN = 1024
_IMAGE_RE = re.compile(r"^(?:(?P<name>[a-z0-9][a-z0-9._/:-]{0,254})@)?sha256:(?P<hex>[0-9a-f]{64})$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,127}$")
_ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")
_SIGNATURE_RE = re.compile(r"^0x[0-9a-fA-F]{130}$")


def check_relative_path(value: str, *, what: str) -> str:
    """A path inside /in or /out: relative, '/'-separated, no '.', '..' or empty parts, no NUL."""
    if not value:
        raise ValueError(f"{what} path is empty")
    if len(value) > MAX_PATH_LEN:
        raise ValueError(f"{what} path is longer than {MAX_PATH_LEN} characters")
    if "\x00" in value or "\\" in value:
        raise ValueError(f"{what} path {value!r} contains NUL or a backslash")
    if value.startswith("/"):
        raise ValueError(f"{what} path {value!r} is absolute; give it relative to the {what} directory")
    parts = value.split("/")
    if any(part == ".." for part in parts):
        raise ValueError(f"{what} path {value!r} contains '..'")
    if any(part in ("", ".") for part in parts):
        raise ValueError(f"{what} path {value!r} has an empty or '.' component")
    return value


def _overlapping(paths: list[str]) -> tuple[str, str] | None:
    """Two paths where one is a directory prefix of the other (or equal), if any."""
    ordered = sorted(paths)
    for first, second in zip(ordered, ordered[1:], strict=False):
        if second == first or second.startswith(first + "/"):
            return first, second
    return None


def _sha256_field(value: Any) -> Any:
    if isinstance(value, str):
        value = value.removeprefix("sha256:").lower()
        if not is_sha256_hex(value):
            raise ValueError(f"expected a sha256 as 64 hex characters, got {value!r}")
    return value


def _wei_field(value: Any) -> Any:
    if isinstance(value, str):
        # ASCII digits only ('١٢' is digits to str.isdigit) and no longer than a uint96 can be
        if not (value.isascii() and value.isdigit()) or len(value) > len(str(MAX_UINT96)):
            raise ValueError(f"expected an integer amount of wei, got {value!r}")
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer amount of wei (no floats), got {value!r}")
    return value


Sha256Hex = Annotated[str, BeforeValidator(_sha256_field),
                      Field(description="sha256 as 64 lower-case hex characters ('sha256:' prefix accepted)")]
Wei = Annotated[
    int,
    BeforeValidator(_wei_field),
    Field(ge=0, le=MAX_UINT96),
    PlainSerializer(lambda v: str(v), return_type=str, when_used="json"),
    WithJsonSchema({"oneOf": [{"type": "integer", "minimum": 0},
                              {"type": "string", "pattern": "^[0-9]{1,29}$"}],
                    "description": "amount in wei of GRID (uint96); canonical form is a decimal string"}),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class InputBlob(_Strict):
    """One input file, laid out at /in/<path> after its sha256 is verified."""

    path: str = Field(description="relative path under /in")
    sha256: Sha256Hex
    size: int = Field(ge=0, le=MAX_INPUT_BYTES, description="size in bytes")

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return check_relative_path(value, what="input")


class Resources(_Strict):
    """What one replica may use; the sandbox enforces each limit."""

    cpus: float = Field(default=1.0, gt=0, le=256, description="CPU cores (fractions allowed)")
    memory_mb: int = Field(default=256, ge=16, le=1_048_576)
    gpus: int = Field(default=0, ge=0, le=16)
    disk_mb: int = Field(default=256, ge=1, le=1_048_576, description="cap on what the task writes to /out")
    timeout_s: int = Field(default=60, ge=1, le=7 * 86_400, description="wall-clock limit; killed after")
    pids: int = Field(default=64, ge=4, le=32_768)


class Requirements(_Strict):
    """Optional capabilities a provider must have to be matched (not enforced inside the sandbox)."""

    arch: Literal["x86_64", "aarch64"] | None = None
    gpu_model: str | None = Field(default=None, max_length=128)
    min_gpu_memory_mb: int | None = Field(default=None, ge=0)
    min_memory_mb: int | None = Field(default=None, ge=0)
    min_cpus: int | None = Field(default=None, ge=0)
    providers: list[str] | None = Field(
        default=None, max_length=MAX_PROVIDER_LIST,
        description="only these provider addresses may run it (the matcher says when none of them can)")
    exclude_providers: list[str] | None = Field(
        default=None, max_length=MAX_PROVIDER_LIST, description="these provider addresses never run it")

    @field_validator("providers", "exclude_providers")
    @classmethod
    def _addresses(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        for address in value:
            if not _ADDRESS_RE.fullmatch(address):
                raise ValueError(f"{address!r} is not a 0x address of 40 hex digits")
        return sorted({address.lower() for address in value})  # order and case carry no meaning

    @model_validator(mode="after")
    def _lists_apart(self) -> Requirements:
        both = set(self.providers or ()) & set(self.exclude_providers or ())
        if both:
            raise ValueError(f"{sorted(both)[0]} is both allowed (providers) and excluded "
                             "(exclude_providers)")
        return self


class ArtifactSignature(_Strict):
    """An EIP-191 signature by `signer` over `artifact_signing_message(...)`; a policy may trust signers."""

    signer: str = Field(description="0x address of the signing key")
    signature: str = Field(description="0x hex of the 65-byte signature")

    @field_validator("signer")
    @classmethod
    def _signer(cls, value: str) -> str:
        if not _ADDRESS_RE.fullmatch(value):
            raise ValueError(f"signer must be a 0x address of 40 hex characters, got {value!r}")
        return value.lower()

    @field_validator("signature")
    @classmethod
    def _signature(cls, value: str) -> str:
        if not _SIGNATURE_RE.fullmatch(value):
            raise ValueError("signature must be 0x followed by 130 hex characters (65 bytes)")
        return value.lower()


# escrow room a trust level gets by default (the customer's budget; verifier.replication plans within it):
# standard: the primary, a partner or spot check, one tie-breaker (the bootstrap's k = 3 fits too);
# high: two agreeing replicas and one tie-breaker; paranoid: three unanimous ones and two more on a dissent
TRUST_MAX_REPLICAS = {"standard": 3, "high": 3, "paranoid": 5}
TRUST_MIN_REPLICAS = {"standard": 2, "high": 2, "paranoid": 3}


class TaskSpec(_Strict):
    """A task: what to run, on what inputs, with which limits, how many replicas and at what price."""

    version: Literal[1] = Field(description="spec format version")
    name: str = Field(description="a short human name, not used for matching")
    runtime: Literal["docker", "wasm"]
    image: str | None = Field(default=None, description="docker: local image id 'sha256:<hex>' "
                                                        "(or 'name@sha256:<hex>', the name is informational)")
    module: Sha256Hex | None = Field(default=None, description="wasm: sha256 of the module blob")
    command: list[str] = Field(default_factory=list, max_length=256, description="argv")
    env: dict[str, str] = Field(default_factory=dict)
    inputs: list[InputBlob] = Field(default_factory=list, max_length=MAX_INPUTS)
    outputs: list[str] = Field(default_factory=list, max_length=MAX_OUTPUTS,
                               description="paths relative to /out (files or directories) that count for "
                                           "the result")
    include_stdout: bool = Field(default=False, description="whether stdout counts for the result hash")
    resources: Resources = Field(default_factory=Resources)
    network: bool = False
    requirements: Requirements = Field(default_factory=Requirements)
    replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS, description="k: replicas in the first round")
    quorum: int = Field(default=1, ge=1, le=MAX_REPLICAS, description="q: equal result hashes needed")
    max_replicas: int | None = Field(default=None, ge=1, le=MAX_REPLICAS,
                                     description="replicas paid for in escrow (default: replicas + 1, "
                                                 "room to replace a dead provider)")
    trust: Literal["standard", "high", "paranoid"] | None = Field(
        default=None, description="adaptive replication instead of a fixed k: one replica first, then the "
                                  "partners or spot check the replication policy plans from the provider's "
                                  "record, stake and the price (standard), or always one trusted partner "
                                  "(high) or two, unanimous (paranoid); replicas and quorum stay 1; "
                                  "max_replicas, the room for checks, defaults to 3, 3 and 5")
    max_price_per_replica: Wei = 0
    deadline_s: int = Field(default=3600, ge=60, le=30 * 86_400, description="seconds from posting")
    priority: int = Field(default=0, ge=0, le=100)
    image_signature: ArtifactSignature | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME_RE.fullmatch(value):
            raise ValueError("name must be 1-128 characters of letters, digits, space, '.', '_' or '-', "
                             "starting with a letter or digit")
        return value

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        if value is not None and not _IMAGE_RE.fullmatch(value):
            raise ValueError("image must be a digest 'sha256:<64 hex>' or 'name@sha256:<64 hex>', got "
                             f"{value!r}"
                             " (tags are not accepted: they can move)")
        return value

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str]) -> list[str]:
        if any("\x00" in arg for arg in value):
            raise ValueError("command arguments may not contain NUL")
        if sum(len(arg) for arg in value) > 65_536:
            raise ValueError("command is longer than 64 KiB")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if not _ENV_KEY.fullmatch(key):
                raise ValueError(f"env name {key!r} is not a valid variable name")
            if "\x00" in item:
                raise ValueError(f"env {key} contains NUL")
        if len(value) > 256:
            raise ValueError("at most 256 env variables")
        return value

    @field_validator("outputs")
    @classmethod
    def _outputs(cls, value: list[str]) -> list[str]:
        for item in value:
            check_relative_path(item, what="output")
        clash = _overlapping(value)
        if clash:
            raise ValueError(f"outputs {clash[0]!r} and {clash[1]!r} overlap; list each file or directory "
                             "once")
        return sorted(value)  # order carries no meaning, so it must not change the spec hash

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, value: list[InputBlob]) -> list[InputBlob]:
        return sorted(value, key=lambda blob: blob.path)

    @model_validator(mode="after")
    def _consistent(self) -> TaskSpec:
        if self.runtime == "docker":
            if self.image is None:
                raise ValueError("runtime 'docker' needs 'image' (a digest 'sha256:<64 hex>')")
            if self.module is not None:
                raise ValueError("'module' is for runtime 'wasm'; a docker spec names an 'image'")
            if not self.command:
                raise ValueError("runtime 'docker' needs a non-empty 'command' (images carry no entrypoint)")
        else:
            if self.module is None:
                raise ValueError("runtime 'wasm' needs 'module' (the sha256 of the module blob)")
            if self.image is not None:
                raise ValueError("'image' is for runtime 'docker'; a wasm spec names a 'module'")
            if self.resources.gpus:
                raise ValueError("runtime 'wasm' cannot use GPUs")
        clash = _overlapping([blob.path for blob in self.inputs])
        if clash:
            raise ValueError(f"inputs {clash[0]!r} and {clash[1]!r} overlap")
        if self.quorum > self.replicas:
            raise ValueError(f"quorum ({self.quorum}) must be at most replicas ({self.replicas})")
        allowed = self.requirements.providers
        if allowed is not None and len(allowed) < self.replicas:
            raise ValueError(f"requirements.providers allows {len(allowed)} provider(s); replicas is "
                             f"{self.replicas} and each replica needs a provider of its own")
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) must be at least replicas "
                             f"({self.replicas})")
        if self.trust is not None:
            if self.replicas != 1 or self.quorum != 1:
                raise ValueError(f"trust {self.trust!r} replaces a fixed k: leave replicas and quorum at 1 "
                                 f"(got {self.replicas} and {self.quorum})")
            least = TRUST_MIN_REPLICAS[self.trust]
            if self.max_replicas is not None and self.max_replicas < least:
                raise ValueError(f"trust {self.trust!r} needs max_replicas >= {least} (room for the checks)")
        return self

    # ---------------------------------------------------------------- derived values

    @property
    def effective_max_replicas(self) -> int:
        """Replicas escrowed: max_replicas, or if unset replicas + 1 (under a trust level: room for checks),
        so a dead provider's replica can be replaced without waiting for the commit window (issue 14); what
        no replica earns is refunded at finalize."""
        if self.max_replicas is not None:
            return self.max_replicas
        if self.trust is not None:
            return TRUST_MAX_REPLICAS[self.trust]
        return min(MAX_REPLICAS, self.replicas + 1)

    @property
    def image_id(self) -> str | None:
        """The local image id 'sha256:<hex>' a docker spec names (any name before '@' dropped)."""
        if self.image is None:
            return None
        match = _IMAGE_RE.fullmatch(self.image)
        assert match is not None  # validated
        return "sha256:" + match.group("hex")

    @property
    def artifact_digest(self) -> str:
        """'sha256:<hex>' of what runs: the image id for docker, the module for wasm."""
        return self.image_id if self.runtime == "docker" else f"sha256:{self.module}"  # type: ignore[return-value]


def artifact_signing_message(runtime: str, digest: str) -> str:
    """The text a trusted key signs (EIP-191 personal_sign) to vouch for an image or module.

    The runtime is part of it so a signature for a wasm module can never pass for an image.
    """
    return f"Hashgrid artifact {runtime} {digest}"


def spec_document(spec: TaskSpec) -> dict[str, Any]:
    """The normalised JSON document of a spec: defaults filled in, unset optional fields dropped."""
    document = spec.model_dump(mode="json", exclude_none=True)
    # nested models drop their None fields too (exclude_none is recursive), keeping the form minimal
    return document


def canonical_spec(spec: TaskSpec) -> bytes:
    """The spec's canonical JSON bytes: what is uploaded to the content store and hashed."""
    return canonical_json(spec_document(spec))


def spec_hash(spec: TaskSpec) -> bytes:
    """The on-chain specHash: sha256 of the canonical JSON, as 32 bytes."""
    return sha256_bytes(canonical_spec(spec))


def _format_errors(exc: ValidationError) -> list[dict[str, str]]:
    problems = []
    for error in exc.errors(include_url=False):
        location = ".".join(str(part) for part in error["loc"]) or "spec"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field (not part of spec version 1)"
        elif error["type"] == "literal_error" and error["loc"] and error["loc"][-1] == "runtime":
            message = f"unknown runtime {error.get('input')!r}; expected 'docker' or 'wasm'"
        problems.append({"loc": location, "msg": message})
    return problems


def parse_spec(data: Any, *, source: str = "spec") -> TaskSpec:
    """Validate a decoded document into a TaskSpec, or raise SpecInvalid listing every problem."""
    if not isinstance(data, dict):
        raise SpecInvalid(f"{source}: a spec must be a mapping, got {type(data).__name__}", errors=[])
    try:
        return TaskSpec.model_validate(data)
    except ValidationError as exc:
        problems = _format_errors(exc)
        lines = "; ".join(f"{p['loc']}: {p['msg']}" for p in problems)
        raise SpecInvalid(f"{source} is not a valid task spec: {lines}", errors=problems) from None


def parse_spec_bytes(raw: bytes, *, source: str = "spec") -> TaskSpec:
    """Parse JSON or YAML bytes (YAML is a superset of JSON) into a TaskSpec."""
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SpecInvalid(f"{source} is not valid YAML or JSON: {exc}", errors=[]) from None
    return parse_spec(data, source=source)


def load_spec_document(path: Path | str) -> Any:
    """The decoded document of a .yaml, .yml or .json spec file, not validated yet."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecInvalid(f"cannot read spec {path}: {exc.strerror}", errors=[]) from None
    try:
        if path.suffix == ".json":
            return json.loads(raw)
        return yaml.safe_load(raw.decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise SpecInvalid(f"{path} is not valid JSON: {exc}", errors=[]) from None
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SpecInvalid(f"{path} is not valid YAML or JSON: {exc}", errors=[]) from None


def load_spec(path: Path | str) -> TaskSpec:
    """Load a spec from a .yaml, .yml or .json file."""
    return parse_spec(load_spec_document(path), source=str(path))


def load_local_spec(path: Path, inputs_dir: Path | None = None,
                    found: dict[str, Path] | None = None) -> TaskSpec:
    """A spec file as written by a person: inputs given by `path` alone (or `file:`) and a wasm `module`
    given as a file path get their sha256 and size from the local files, looked for in `inputs_dir` and
    next to the spec; a fully hashed spec is read as is."""
    document = load_spec_document(path)
    dirs = [d for d in ([inputs_dir] if inputs_dir is not None else []) + [path.resolve().parent]]
    return parse_spec(fill_local_hashes(document, dirs, found), source=str(path))


def _local_file(name: str, dirs: list[Path], what: str) -> Path:
    for directory in dirs:
        candidate = (directory / name)
        if candidate.is_file():
            return candidate
    where = ", ".join(str(d) for d in dirs)
    raise ContentMissing(f"{what}: no file {name} in {where} (pass --inputs DIR, or give its sha256 and "
                         "size)")


def fill_local_hashes(document: Any, dirs: list[Path], found: dict[str, Path] | None = None) -> Any:
    """`document` with each input lacking sha256/size filled from its local file, and a wasm module named
    by a file path replaced by that file's sha256 (pure apart from reading those files); `found` collects
    sha256 -> the local file read, for the upload."""
    found = {} if found is None else found
    if not isinstance(document, dict):
        return document
    filled = dict(document)
    inputs = filled.get("inputs")
    if isinstance(inputs, list):
        rows = []
        for item in inputs:
            if isinstance(item, dict) and isinstance(item.get("path"), str) and (
                    "sha256" not in item or "size" not in item or "file" in item):
                item = dict(item)
                source = _local_file(str(item.pop("file", item["path"])), dirs, f"input {item['path']}")
                digest = sha256_file(source)[0]
                if "sha256" in item and str(item["sha256"]).lower().removeprefix("sha256:") != digest:
                    raise DigestMismatch(f"input {item['path']} ({source})", expected=str(item["sha256"]),
                                         actual=digest)
                item["sha256"] = digest
                item["size"] = source.stat().st_size
                found[digest] = source
            rows.append(item)
        filled["inputs"] = rows
    module = filled.get("module")
    if isinstance(module, str) and not _looks_like_sha256(module):
        source = _local_file(module, dirs, "module")
        filled["module"] = sha256_file(source)[0]
        found[filled["module"]] = source
    return filled


def _looks_like_sha256(text: str) -> bool:
    bare = text.lower().removeprefix("sha256:")
    return len(bare) == 64 and all(c in "0123456789abcdef" for c in bare)


def spec_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the spec, for editors and other-language clients."""
    schema = TaskSpec.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://hashgrid.invalid/spec.schema.json"
    schema["title"] = "Hashgrid task spec (version 1)"
    return schema


def write_json_schema(path: Path) -> None:
    """Write the schema file (examples/spec.schema.json)."""
    path.write_text(json.dumps(spec_json_schema(), indent=2, sort_keys=True) + "\n")

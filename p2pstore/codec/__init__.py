"""Layer 4, codec: chunking, AEAD encryption, k-of-n erasure coding, fragment ids, manifests
and capabilities.  Pure and synchronous; memory is bounded by one chunk and its n fragments.

Put: ``ObjectEncoder(key, size, k=, n=, chunk_size=)`` over ``iter_chunks(file)``, then
``finish()`` gives the manifest and read cap.  Get: ``decode_manifest(bytes, object_id)``, then
``ObjectDecoder(manifest, key).decode_chunk(i, {share: fragment})``.  Repair, with the verify cap
alone: ``rebuild_fragments(manifest, i, survivors, wanted)``.
"""

from p2pstore.codec.aead import (
    AES_256_GCM,
    CHACHA20_POLY1305,
    CIPHERS,
    DEFAULT_CIPHER,
    KEY_BYTES,
    ChunkCipher,
    random_key,
)
from p2pstore.codec.capability import (
    CapabilityError,
    ReadCap,
    VerifyCap,
    parse_capability,
)
from p2pstore.codec.chunking import DEFAULT_CHUNK_SIZE, chunk_count, iter_chunks
from p2pstore.codec.convergence import ConvergentKeyDeriver, convergent_key
from p2pstore.codec.decoder import ObjectDecoder, check_fragment_of, decode_object
from p2pstore.codec.encoder import (
    DEFAULT_K,
    DEFAULT_N,
    DEFAULT_RULE,
    EncodedChunk,
    EncodedObject,
    ObjectEncoder,
    encode_object,
)
from p2pstore.codec.erasure import check_coding
from p2pstore.codec.fragment_ids import check_fragment, fragment_id
from p2pstore.codec.fragments import FragmentHeader, parse_fragment
from p2pstore.codec.manifest import (
    MAX_MANIFEST_BYTES,
    ChunkEntry,
    Manifest,
    decode_manifest,
    max_object_size,
)
from p2pstore.codec.repair import rebuild_fragments

__all__ = [
    "AES_256_GCM",
    "CHACHA20_POLY1305",
    "CIPHERS",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_CIPHER",
    "DEFAULT_K",
    "DEFAULT_N",
    "DEFAULT_RULE",
    "KEY_BYTES",
    "MAX_MANIFEST_BYTES",
    "CapabilityError",
    "ChunkCipher",
    "ChunkEntry",
    "ConvergentKeyDeriver",
    "EncodedChunk",
    "EncodedObject",
    "FragmentHeader",
    "Manifest",
    "ObjectDecoder",
    "ObjectEncoder",
    "ReadCap",
    "VerifyCap",
    "check_coding",
    "check_fragment",
    "check_fragment_of",
    "chunk_count",
    "convergent_key",
    "decode_manifest",
    "decode_object",
    "encode_object",
    "fragment_id",
    "iter_chunks",
    "max_object_size",
    "parse_capability",
    "parse_fragment",
    "random_key",
    "rebuild_fragments",
]

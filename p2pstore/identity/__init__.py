"""Layer 1, identity: node ids, the mesh CA, certificates and what a node trusts.

Everything a peer is admitted as (node id, datacenter, region, role) comes from a certificate the
mesh CA signed; the layers above import these names from here.
"""

from p2pstore.identity.ca import MeshCA
from p2pstore.identity.ca_index import IssuedCertificate, Revocation, parse_reason
from p2pstore.identity.certificates import (
    CLOCK_SKEW,
    TENANT_URI_PREFIX,
    PeerIdentity,
    Role,
    TrustAnchor,
    format_serial,
    identity_from_certificate,
    load_certificate,
    load_crl,
    parse_serial,
    validate_datacenter,
    validate_mesh_name,
    validate_region,
    validate_tenant,
)
from p2pstore.identity.credentials import (
    NodeCredentials,
    load_private_key,
    verify_signature,
)
from p2pstore.identity.nodeid import (
    NODE_ID_BYTES,
    NodeId,
    node_id_from_bytes,
    node_id_from_public_key,
    parse_node_id,
    public_key_bytes,
    short_id,
)

__all__ = [
    "CLOCK_SKEW",
    "NODE_ID_BYTES",
    "TENANT_URI_PREFIX",
    "IssuedCertificate",
    "MeshCA",
    "NodeCredentials",
    "NodeId",
    "PeerIdentity",
    "Revocation",
    "Role",
    "TrustAnchor",
    "format_serial",
    "identity_from_certificate",
    "load_certificate",
    "load_crl",
    "load_private_key",
    "node_id_from_bytes",
    "node_id_from_public_key",
    "parse_node_id",
    "parse_reason",
    "parse_serial",
    "public_key_bytes",
    "short_id",
    "validate_datacenter",
    "validate_mesh_name",
    "validate_region",
    "validate_tenant",
    "verify_signature",
]

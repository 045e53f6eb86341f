"""Ed25519 key pairs in the form libtorrent's BEP44 calls take, from a 32-byte seed.

The Python binding of libtorrent 2.0 signs mutable items itself but offers no key
generation, and Debian's python3 may lack a crypto package: this derives the public key
with plain integer arithmetic (RFC 8032 section 5.1.5). Test use only: not constant time.

keypair(seed) returns (public key: 32 bytes, secret key: 64 bytes), the secret key being
SHA-512 of the seed with the scalar clamped, as libtorrent's ed25519_create_keypair makes it.
"""

import hashlib

P = 2**255 - 19
D = -121665 * pow(121666, P - 2, P) % P


def _add(a, b):
    # Extended twisted Edwards coordinates (x, y, z, t); a complete addition formula.
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    e1 = (y1 - x1) * (y2 - x2) % P
    e2 = (y1 + x1) * (y2 + x2) % P
    c = 2 * t1 * t2 * D % P
    d = 2 * z1 * z2 % P
    e, f, g, h = e2 - e1, d - c, d + c, e2 + e1
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _base():
    y = 4 * pow(5, P - 2, P) % P
    xx = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    x = pow(xx, (P + 3) // 8, P)
    if (x * x - xx) % P:
        x = x * pow(2, (P - 1) // 4, P) % P
    if x & 1:
        x = P - x
    return (x, y, 1, x * y % P)


def keypair(seed):
    h = bytearray(hashlib.sha512(seed).digest())
    h[0] &= 248
    h[31] &= 127
    h[31] |= 64
    scalar = int.from_bytes(h[:32], "little")
    point, q = _base(), (0, 1, 1, 0)
    while scalar:
        if scalar & 1:
            q = _add(q, point)
        point = _add(point, point)
        scalar >>= 1
    x, y, z, _ = q
    zi = pow(z, P - 2, P)
    x, y = x * zi % P, y * zi % P
    public = (y | ((x & 1) << 255)).to_bytes(32, "little")
    return public, bytes(h)

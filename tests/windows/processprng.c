/* A stand-in bcryptprimitives.dll for Wine 8, which lacks ProcessPrng (Rust's std on
 * Windows 10+ imports it). Built by tests/tests/windows.rs next to the test's copy of
 * duet.exe; never shipped: Windows 10 and later have the real one. */
#include <windows.h>
#include <bcrypt.h>

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (BCryptGenRandom(NULL, data, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0)
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}

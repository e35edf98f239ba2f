import { generateKeyPairSync, randomBytes } from "node:crypto";

/** An SSH wire string: a 4-byte big-endian length, then the bytes. */
function sshString(data: Buffer | string): Buffer {
  const bytes = typeof data === "string" ? Buffer.from(data) : data;
  return Buffer.concat([uint32(bytes.length), bytes]);
}

function uint32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

/**
 * A new ed25519 key pair in OpenSSH's formats, as `ssh-keygen -t ed25519 -N "" -C comment`
 * writes it (unencrypted "openssh-key-v1" private key, one-line public key), made in process:
 * a VM create needs one for the guest's sshd and a spawned ssh-keygen costs several ms.
 */
export function ed25519KeyPair(comment: string): { privateKey: string; publicKey: string } {
  const jwk = generateKeyPairSync("ed25519").privateKey.export({ format: "jwk" });
  const seed = Buffer.from(jwk.d!, "base64url");
  const pub = Buffer.from(jwk.x!, "base64url");
  const pubBlob = Buffer.concat([sshString("ssh-ed25519"), sshString(pub)]);
  const check = uint32(randomBytes(4).readUInt32BE());
  const secret = Buffer.concat([check, check, pubBlob, sshString(Buffer.concat([seed, pub])), sshString(comment)]);
  // Padded with 1, 2, 3, … to the cipher block size ("none": 8).
  const padding = Buffer.from(Array.from({ length: (8 - (secret.length % 8)) % 8 }, (_, i) => i + 1));
  const blob = Buffer.concat([
    Buffer.from("openssh-key-v1\0"),
    sshString("none"),
    sshString("none"),
    sshString(""),
    uint32(1),
    sshString(pubBlob),
    sshString(Buffer.concat([secret, padding])),
  ]);
  const lines = blob
    .toString("base64")
    .match(/.{1,70}/g)!
    .join("\n");
  return {
    privateKey: `-----BEGIN OPENSSH PRIVATE KEY-----\n${lines}\n-----END OPENSSH PRIVATE KEY-----\n`,
    publicKey: `ssh-ed25519 ${pubBlob.toString("base64")} ${comment}\n`,
  };
}

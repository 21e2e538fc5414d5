// Ceremony verification rate of npm @simplewebauthn/server on one core.
//
//   node swa_verify.mjs SAMPLE.json {auth|reg} SECONDS
//
// Prints one JSON line: ops, wall and CPU seconds, rates per wall and CPU
// second. Same sample
// as py_verify.py and tapgate's bench tool.
import { readFileSync } from 'node:fs';
import { verifyAuthenticationResponse, verifyRegistrationResponse } from '@simplewebauthn/server';

const [samplePath, what, secondsArg] = process.argv.slice(2);
const sample = JSON.parse(readFileSync(samplePath, 'utf8'));
const seconds = Number(secondsArg);
const origin = sample.origin;
const rpID = sample.rpId;

async function reg() {
  const v = await verifyRegistrationResponse({
    response: sample.reg,
    expectedChallenge: sample.regChallenge,
    expectedOrigin: origin,
    expectedRPID: rpID,
    requireUserVerification: true,
  });
  if (!v.verified) throw new Error('registration did not verify');
  return v.registrationInfo.credential;
}

const credential = await reg();

async function auth() {
  const v = await verifyAuthenticationResponse({
    response: sample.auth,
    expectedChallenge: sample.authChallenge,
    expectedOrigin: origin,
    expectedRPID: rpID,
    credential: { id: credential.id, publicKey: credential.publicKey, counter: 1 },
    requireUserVerification: true,
  });
  if (!v.verified || v.authenticationInfo.newCounter !== 2) throw new Error('assertion did not verify');
}

const fn = { auth, reg }[what];
await fn();
let ops = 0;
const cpu0 = process.cpuUsage();
const start = process.hrtime.bigint();
const deadline = start + BigInt(Math.round(seconds * 1e9));
let now;
for (;;) {
  for (let i = 0; i < 20; i++) await fn();
  ops += 20;
  now = process.hrtime.bigint();
  if (now >= deadline) break;
}
const elapsed = Number(now - start) / 1e9;
// CPU of every thread of the process (GC helpers included), in seconds.
const used = process.cpuUsage(cpu0);
const cpu = (used.user + used.system) / 1e6;
console.log(JSON.stringify({ ops, seconds: elapsed, cpu_seconds: cpu, per_sec: ops / elapsed, per_cpu_sec: ops / cpu }));

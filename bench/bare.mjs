// The bare runtime: loads nothing of smtpd, says READY and waits for stdin
// to end. The bench reads its RSS as the runtime's own footprint. Plain
// JavaScript, launched exactly as bench/server.mjs is (bench/launch.mjs:
// same runtime flags, no loader, no type stripping), with the same harness
// (bench/control.mjs and its node: imports: on Deno the first node: module
// alone costs 1–2 MB, which is the bench's, not the library's).
import { control } from "./control.mjs";

control(0);

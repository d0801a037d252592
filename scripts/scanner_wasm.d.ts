/** The body scanner's WebAssembly module, assembled from its listing. */
export function assemble(): Uint8Array;
/** src/engine/scanner_wasm.ts's text for `bytes`. */
export function moduleText(bytes: Uint8Array): string;

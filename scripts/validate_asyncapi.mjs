#!/usr/bin/env node
// Validate an AsyncAPI document with the official @asyncapi/parser.
//
//   npm install --no-audit --no-fund      # once; installs the devDependency
//   node scripts/validate_asyncapi.mjs topics/asyncapi.json
//
// Prints every diagnostic (severity, rule code, path, message) and exits 1 when
// the document has any error-level diagnostic or could not be parsed, 2 on bad
// usage or when the parser is not installed. With --strict, warnings fail too.
import { existsSync } from "node:fs";
import { resolve } from "node:path";

const SEVERITY = ["error", "warning", "info", "hint"];

const args = process.argv.slice(2);
const strict = args.includes("--strict");
const files = args.filter((a) => a !== "--strict");
if (files.length !== 1) {
  console.error("usage: node scripts/validate_asyncapi.mjs [--strict] <asyncapi.json|yaml>");
  process.exit(2);
}
const file = resolve(files[0]);
if (!existsSync(file)) {
  console.error(`no such file: ${file}`);
  process.exit(2);
}

let parserModule;
try {
  parserModule = await import("@asyncapi/parser");
} catch (err) {
  console.error(`@asyncapi/parser is not installed (run: npm install --no-audit --no-fund): ${err}`);
  process.exit(2);
}
const { Parser, fromFile } = parserModule.default?.Parser ? parserModule.default : parserModule;

const parser = new Parser();
const { document, diagnostics } = await fromFile(parser, file).parse();

let errors = 0;
let warnings = 0;
for (const d of diagnostics) {
  const level = SEVERITY[d.severity] ?? String(d.severity);
  if (d.severity === 0) errors += 1;
  if (d.severity === 1) warnings += 1;
  const path = (d.path ?? []).join(".");
  console.log(`${level}: ${d.code} at ${path || "(root)"}: ${d.message}`);
}
if (!document) {
  console.error(`${file}: not a valid AsyncAPI document (${errors} error(s))`);
  process.exit(1);
}
const summary =
  `${file}: AsyncAPI ${document.version()}, ${document.channels().length} channels, ` +
  `${document.operations().length} operations, ${document.allMessages().length} messages; ` +
  `${errors} error(s), ${warnings} warning(s)`;
if (errors > 0 || (strict && warnings > 0)) {
  console.error(summary);
  process.exit(1);
}
console.log(summary);

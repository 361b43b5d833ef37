// Builds contact-mapper.js into a component with componentize-js's API (its CLI's path
// handling does not work here, and AOT mode downloads a binary). Usage:
//   node build.mjs <node_modules holding componentize-js> <wit dir> <output .wasm>
import { writeFile } from "node:fs/promises";
import { fileURLToPath, pathToFileURL } from "node:url";
import { dirname, join, resolve } from "node:path";

const [modules, witPath, output] = process.argv.slice(2);
if (!modules || !witPath || !output) {
  console.error("usage: node build.mjs <node_modules dir> <wit dir> <output .wasm>");
  process.exit(2);
}
// Loaded by path: ES modules ignore NODE_PATH, and the tools live in a cache folder.
const entry = join(resolve(modules), "@bytecodealliance/componentize-js/src/componentize.js");
const { componentize } = await import(pathToFileURL(entry).href);
const here = dirname(fileURLToPath(import.meta.url));
const { component } = await componentize({
  sourcePath: join(here, "contact-mapper.js"),
  witPath: resolve(witPath),
  worldName: "record-mapper",
  // A mapping needs none of these; leaving them out keeps the imports to what the host allows.
  disableFeatures: ["random", "stdio", "clocks", "http", "fetch-event"],
});
await writeFile(output, component);

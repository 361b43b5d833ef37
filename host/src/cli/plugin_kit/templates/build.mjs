// Builds a JavaScript plugin with componentize-js's API (written and run by `conduit plugin
// build`). Usage: node build.mjs <node_modules> <source .js> <wit dir> <world> <output .wasm>
import { writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const [modules, source, witPath, worldName, output] = process.argv.slice(2);
// Loaded by path: ES modules ignore NODE_PATH, and the tool lives in a cache folder.
const entry = join(resolve(modules), "@bytecodealliance/componentize-js/src/componentize.js");
const { componentize } = await import(pathToFileURL(entry).href);
const { component } = await componentize({
  sourcePath: resolve(source),
  witPath: resolve(witPath),
  worldName,
  // A mapping needs none of these; leaving them out keeps the imports to what the host allows.
  disableFeatures: ["random", "stdio", "clocks", "http", "fetch-event"],
});
await writeFile(output, component);

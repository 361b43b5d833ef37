// Builds contact-mapper.js into a component with componentize-js's API. componentize-js resolves
// imports inside the source's folder only, so the source and the SDK's helper
// (plugins/sdk-js/conduit-plugin.js) are copied into a fresh folder first. Usage:
//   node build.mjs <node_modules holding componentize-js> <wit dir> <output .wasm>
import { copyFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { fileURLToPath, pathToFileURL } from "node:url";
import { dirname, join, resolve } from "node:path";

const [modules, witPath, output] = process.argv.slice(2);
if (!modules || !witPath || !output) {
  console.error("usage: node build.mjs <node_modules dir> <wit dir> <output .wasm>");
  process.exit(2);
}
const entry = join(resolve(modules), "@bytecodealliance/componentize-js/src/componentize.js");
const { componentize } = await import(pathToFileURL(entry).href);
const here = dirname(fileURLToPath(import.meta.url));
const sources = await mkdtemp(join(tmpdir(), "contact-mapper-js-"));
try {
  await copyFile(join(here, "contact-mapper.js"), join(sources, "contact-mapper.js"));
  await copyFile(join(here, "../../sdk-js/conduit-plugin.js"), join(sources, "conduit-plugin.js"));
  const { component } = await componentize({
    sourcePath: join(sources, "contact-mapper.js"),
    witPath: resolve(witPath),
    worldName: "record-mapper",
    // A mapping needs none of these; leaving them out keeps the imports to what the host allows.
    disableFeatures: ["random", "stdio", "clocks", "http", "fetch-event"],
  });
  await writeFile(output, component);
} finally {
  await rm(sources, { recursive: true, force: true });
}

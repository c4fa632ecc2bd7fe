// Bundles src/main.tsx with esbuild into ../build/webapp (app.js, app.css, index.html): no CDN, no inline
// script (the page's CSP allows only 'self'). `node build.mjs` from web/ (make setup runs it).
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = process.env.HASHGRID_WEBAPP_OUT || join(here, "..", "build", "webapp");
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(here, "src", "main.tsx")],
  bundle: true,
  minify: true,
  format: "esm",
  target: ["es2022"],
  outfile: join(out, "app.js"),
  define: { "process.env.NODE_ENV": '"production"' },
  legalComments: "none",
  logLevel: "warning",
});
copyFileSync(join(here, "src", "index.html"), join(out, "index.html"));
copyFileSync(join(here, "src", "app.css"), join(out, "app.css"));
console.log(`web app built into ${out}`);

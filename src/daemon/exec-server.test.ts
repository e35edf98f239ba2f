import { expect, test } from "bun:test";
import { F, jsonFrame, frameSplitter, type Frame } from "../agent/frames.ts";
import { parseOpen } from "./exec-server.ts";

const frame = (value: unknown): Frame => {
  let out!: Frame;
  frameSplitter(
    () => {},
    (f) => (out = f),
  )(jsonFrame(F.OPEN, 1, value));
  return out;
};

test("the exec socket's OPEN is validated: a bad field is named", () => {
  expect(parseOpen(frame({ vm: "web", argv: ["true"], env: { A: "1" }, tty: true }))).toEqual({ vm: "web", argv: ["true"], env: { A: "1" }, tty: true });
  expect(() => parseOpen(frame({ vm: "web", argv: [] }))).toThrow("argv: a command is needed after --");
  expect(() => parseOpen(frame({ vm: "web", argv: ["x"], cwd: "tmp" }))).toThrow("cwd: --cwd must be an absolute path");
  expect(() => parseOpen(frame({ vm: "web", argv: ["x"], env: { "A B": "1" } }))).toThrow("environment names");
  expect(() => parseOpen(frame({ vm: "web", argv: ["x"], extra: 1 }))).toThrow("exec request");
});

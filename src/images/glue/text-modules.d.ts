// Glue files are imported as text so `bun build --compile` embeds them in the executable.
declare module "*.sh" {
  const text: string;
  export default text;
}
declare module "*.service" {
  const text: string;
  export default text;
}
declare module "*.conf" {
  const text: string;
  export default text;
}
declare module "*.config" {
  const text: string;
  export default text;
}

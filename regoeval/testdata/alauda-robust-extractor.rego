package proxy

default auth = {
  "token": ""
}

auth = {
  "token": input.request.headers["Private-Token"][0]
} if {
  input.request.headers != null
  input.request.headers["Private-Token"] != null
  count(input.request.headers["Private-Token"]) > 0
}

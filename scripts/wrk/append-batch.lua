-- 100 events per POST over 1,000 aggregates
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
local ev = '{"event_type":"PaymentReceived","event_version":2,"data":{"amount":450,"date":"2024-11-15","method":"credit_card"}}'
local evs = {}
for i = 1, 100 do evs[i] = ev end
local body = '{"aggregate_type":"Family","expected_version":"any","user_id":"bench","events":[' .. table.concat(evs, ",") .. ']}'
request = function()
  local path = "/v1/streams/family_" .. math.random(1, 1000)
  return wrk.format(nil, path, nil, body)
end
